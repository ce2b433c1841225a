"""Export tiny, randomly initialised transformers models to ONNX with torch.onnx.export (runs in the exporter venv).

Imports only torch, transformers, numpy and onnx: no harness code. Usage: `python export.py JOBS.json`, where the
file holds a list of jobs `{"arch", "exporter": "torchscript"|"dynamo", "opset": int|null, "seed", "out"}`. Each job
writes into its `out` directory `model.onnx`, `inputs.npz`, `reference.npz` (the torch eager outputs) and, last,
`export.json` (what was done, or the error that stopped it). A failing job does not stop the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import transformers
from torch import nn

VOCAB, IMAGE, PAST = 256, 32, 4
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


@dataclass(frozen=True)
class Shape:
    """The sizes of one set of inputs. The export traces with `EXAMPLE`; the saved inputs and the torch reference
    use `RUN`, other sizes along every dynamic axis, so the exported graph must really be dynamic (torch.export also
    specializes any dimension of size 1 it is shown)."""

    batch: int
    sequence: int


EXAMPLE, RUN = Shape(batch=2, sequence=8), Shape(batch=1, sequence=6)
Sample = Callable[[np.random.Generator, Shape], dict[str, np.ndarray]]


@dataclass
class Export:
    """A module taking and returning plain tensors, how to make its inputs (in order), its outputs and dynamic axes."""

    module: nn.Module
    sample: Sample
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]


class Outputs(nn.Module):
    """A transformers model called with keyword inputs, returning the named fields of its output as a tuple."""

    def __init__(self, model: nn.Module, inputs: list[str], fields: list[str]) -> None:
        super().__init__()
        self.model, self.input_names, self.fields = model, inputs, fields

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(**dict(zip(self.input_names, tensors, strict=True)))
        return tuple(output[field] for field in self.fields)


class CachedDecoder(nn.Module):
    """A causal LM with its KV cache as flat inputs (past_key_values.N.key/value) and outputs (present.N.key/value),
    the layout optimum and onnxruntime-genai give users."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.layers = model, model.config.num_hidden_layers

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        input_ids, attention_mask, *past = tensors
        cache = transformers.DynamicCache(config=self.model.config)
        for layer in range(self.layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = output.past_key_values
        flat = [tensor for layer in range(self.layers)
                for tensor in (present.layers[layer].keys, present.layers[layer].values)]
        return (output.logits, *flat)


def _tokens(rng: np.random.Generator, shape: Shape) -> dict[str, np.ndarray]:
    return {"input_ids": rng.integers(0, VOCAB, (shape.batch, shape.sequence), dtype=np.int64),
            "attention_mask": np.ones((shape.batch, shape.sequence), np.int64)}


def _causal_lm(config: transformers.PretrainedConfig, cached: bool) -> Export:
    model = transformers.AutoModelForCausalLM.from_config(config)
    text = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    if not cached:
        return Export(Outputs(model, ["input_ids", "attention_mask"], ["logits"]), _tokens, ["logits"], text)
    heads, size = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    past_names = [f"past_key_values.{layer}.{kind}" for layer in range(config.num_hidden_layers)
                  for kind in ("key", "value")]

    def sample(rng: np.random.Generator, shape: Shape) -> dict[str, np.ndarray]:
        """A decoding step: new tokens (2 traced, 1 run) after a cache of PAST (traced) or PAST + 1 (run)."""
        new, past = (2, PAST) if shape == EXAMPLE else (1, PAST + 1)
        inputs = {"input_ids": rng.integers(0, VOCAB, (shape.batch, new), dtype=np.int64),
                  "attention_mask": np.ones((shape.batch, past + new), np.int64)}
        return inputs | {name: rng.standard_normal((shape.batch, heads, past, size), np.float32)
                         for name in past_names}

    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
               **{name: {0: "batch", 2: "past_sequence"} for name in past_names}}
    outputs = ["logits", *(name.replace("past_key_values", "present") for name in past_names)]
    return Export(CachedDecoder(model), sample, outputs, dynamic)


def _qwen2(cached: bool, attention: str = "sdpa") -> Export:
    config = transformers.Qwen2Config(vocab_size=VOCAB, num_key_value_heads=2, max_position_embeddings=128,
                                      tie_word_embeddings=False, attn_implementation=attention, **TEXT)
    return _causal_lm(config, cached)


def _llama(cached: bool) -> Export:
    config = transformers.LlamaConfig(vocab_size=VOCAB, num_key_value_heads=2, max_position_embeddings=128, **TEXT)
    return _causal_lm(config, cached)


def _gemma() -> Export:
    config = transformers.GemmaConfig(vocab_size=VOCAB, num_key_value_heads=1, head_dim=16,
                                      max_position_embeddings=128, **TEXT)
    return _causal_lm(config, cached=False)


def _bert(attention: str = "sdpa") -> Export:
    config = transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=64, attn_implementation=attention,
                                     **TEXT)
    model = transformers.BertModel(config, add_pooling_layer=True)

    def sample(rng: np.random.Generator, shape: Shape) -> dict[str, np.ndarray]:
        return _tokens(rng, shape) | {"token_type_ids": np.zeros((shape.batch, shape.sequence), np.int64)}

    names, outputs = ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state", "pooler_output"]
    return Export(Outputs(model, names, outputs), sample, outputs, {n: {0: "batch", 1: "sequence"} for n in names})


def _whisper_encoder() -> Export:
    config = transformers.WhisperConfig(vocab_size=VOCAB, num_mel_bins=16, d_model=64, encoder_layers=2,
                                        encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=1,
                                        decoder_attention_heads=4, decoder_ffn_dim=128, max_source_positions=16,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=1)
    model = transformers.WhisperForConditionalGeneration(config).get_encoder()

    def sample(rng: np.random.Generator, shape: Shape) -> dict[str, np.ndarray]:
        return {"input_features": rng.standard_normal((shape.batch, 16, 32), np.float32)}  # 2 x max_source_positions

    return Export(Outputs(model, ["input_features"], ["last_hidden_state"]), sample, ["last_hidden_state"],
                  {"input_features": {0: "batch"}})


def _image_classifier(model: nn.Module, size: int = IMAGE) -> Export:
    def sample(rng: np.random.Generator, shape: Shape) -> dict[str, np.ndarray]:
        return {"pixel_values": rng.standard_normal((shape.batch, 3, size, size), np.float32)}

    return Export(Outputs(model, ["pixel_values"], ["logits"]), sample, ["logits"], {"pixel_values": {0: "batch"}})


def _vit() -> Export:
    config = transformers.ViTConfig(image_size=IMAGE, patch_size=8, num_labels=10, **TEXT)
    return _image_classifier(transformers.ViTForImageClassification(config))


def _resnet() -> Export:
    config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[2, 2, 2, 2],
                                       layer_type="basic", num_labels=10)  # ResNet18's layout, narrower
    return _image_classifier(transformers.ResNetForImageClassification(config), 64)


def _mobilenet_v2() -> Export:
    config = transformers.MobileNetV2Config(depth_multiplier=0.35, image_size=64, num_labels=10)
    return _image_classifier(transformers.MobileNetV2ForImageClassification(config), 64)


def _convnext() -> Export:
    config = transformers.ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1], num_labels=10)
    return _image_classifier(transformers.ConvNextForImageClassification(config), 64)


ARCHITECTURES: dict[str, Callable[[], Export]] = {
    "qwen2": lambda: _qwen2(cached=False),
    "qwen2-kv": lambda: _qwen2(cached=True),
    "qwen2-eager": lambda: _qwen2(cached=False, attention="eager"),  # attention as matmuls: no SDPA for the exporter
    "qwen2-kv-eager": lambda: _qwen2(cached=True, attention="eager"),
    "llama": lambda: _llama(cached=False),
    "llama-kv": lambda: _llama(cached=True),
    "gemma": _gemma,
    "bert": _bert,
    "bert-eager": lambda: _bert(attention="eager"),
    "whisper-encoder": _whisper_encoder,
    "vit": _vit,
    "resnet": _resnet,
    "mobilenet-v2": _mobilenet_v2,
    "convnext": _convnext,
}


def export(job: dict) -> dict:
    """Build, run in eager mode and export one model into `job["out"]`; return what was done."""
    out = Path(job["out"])
    torch.manual_seed(job["seed"])
    built = ARCHITECTURES[job["arch"]]()
    module = built.module.eval()
    rng = np.random.default_rng(job["seed"])
    example, inputs = built.sample(rng, EXAMPLE), built.sample(rng, RUN)
    names = list(inputs)
    with torch.no_grad():
        reference = [t.numpy() for t in module(*(torch.from_numpy(inputs[n]) for n in names))]
    np.savez(out / "inputs.npz", **inputs)
    np.savez(out / "reference.npz", **dict(zip(built.outputs, reference, strict=True)))
    tensors = tuple(torch.from_numpy(example[n]) for n in names)
    dynamo = job["exporter"] == "dynamo"
    with tempfile.TemporaryDirectory() as scratch, _quiet() as log:
        path = Path(scratch) / "model.onnx"
        axes = {"dynamic_shapes": (tuple(_dims(built.dynamic.get(n, {})) for n in names),)} if dynamo \
            else {"dynamic_axes": built.dynamic}  # each exporter's own way (dynamo's cannot take dynamic_axes here)
        torch.onnx.export(module, tensors, str(path), input_names=names, output_names=built.outputs,
                          opset_version=job["opset"], dynamo=dynamo, external_data=False, **axes)
        model = onnx.load(str(path))
    _strip_locations(model)
    data = model.SerializeToString(deterministic=True)
    (out / "model.onnx").write_bytes(data)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "exporter": job["exporter"], "opset": opset, "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "parameters": sum(p.numel() for p in module.parameters()),
            "warnings": sorted({line.strip() for line in log.getvalue().splitlines() if "Warning" in line})[:5]}


def _dims(axes: dict[int, str]) -> dict[int, torch.export.Dim]:
    """Named dynamic dimensions, shared between inputs that name the same one."""
    return {axis: _DIMS.setdefault(name, torch.export.Dim(name)) for axis, name in axes.items()}


_DIMS: dict[str, torch.export.Dim] = {}


def _strip_locations(model: onnx.ModelProto) -> None:
    """Drop the exporter's notes of source locations: they name this machine's paths, so bytes would differ."""
    nodes = [node for graph in _graphs(model.graph) for node in graph.node]
    for node in nodes:
        node.doc_string = ""
        kept = [p for p in node.metadata_props if "stack_trace" not in p.key and "source" not in p.key]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


@contextlib.contextmanager
def _quiet():
    """Collect what the exporters print (progress lines, warnings) instead of letting it through."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield log
        log.write("".join(f"{w.category.__name__}: {w.message}\n" for w in caught))


def main(jobs_path: str) -> int:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for job in json.loads(Path(jobs_path).read_text()):
        out = Path(job["out"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "export.json").unlink(missing_ok=True)
        try:
            done = export(job)
        except Exception as error:  # recorded: an exporter that fails is a finding, not a crash of the family
            message = f"{type(error).__name__}: {error}".strip().splitlines()
            done = {"torch": torch.__version__, "transformers": transformers.__version__, "exporter": job["exporter"],
                    "error": message[0][:500] if message else type(error).__name__,
                    "traceback": traceback.format_exc()[-3000:]}
        (out / "export.json").write_text(json.dumps({**job, "requested_opset": job["opset"], **done}, indent=2))
        print(f"{job['arch']} {job['exporter']} opset {job['opset']}: {done.get('error', 'ok')}", flush=True)
    return 0


if __name__ == "__main__":  # offline: the harness sets HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE
    sys.exit(main(sys.argv[1]))
