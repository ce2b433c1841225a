"""The `real` family: tiny, randomly initialised transformers architectures exported by torch.onnx.export.

Only data here (no torch): `harness/realmodels.py` exports them in the exporter venv with
`harness/exporters/export.py`, whose `ARCHITECTURES` the `arch` names. Each architecture is exported by
both of torch's exporters (TorchScript-based and dynamo-based) at the exporter's default opset, and by the
TorchScript-based one at 17 too (asked for 17, the dynamo-based one writes 18 for most of them).
"""

from __future__ import annotations

from dataclasses import dataclass

EXPORTERS = {"ts": "torchscript", "dynamo": "dynamo"}  # name suffix -> torch.onnx.export's exporter
OLDER_OPSET = 17  # what users who pin an opset commonly write; the default is torch's own (20 for torch 2.13)


@dataclass(frozen=True)
class RealSpec:
    """A real model: which architecture, exported how, and what it is for."""

    name: str
    arch: str  # a key of harness/exporters/export.py's ARCHITECTURES
    exporter: str  # "torchscript" or "dynamo"
    opset: int | None  # None: the exporter's default
    tags: tuple[str, ...]
    guards: str
    seed: int = 0


ARCHITECTURES = {  # arch -> (tags, guards)
    "qwen2": (("real-decoder",), "Qwen2 causal LM prefill (GQA, RoPE, RMSNorm, SiLU MLP), as users export it"),
    "qwen2-kv": (("real-decoder", "real-kv"), "Qwen2 decoding step with the KV cache as flat inputs and outputs"),
    "qwen2-eager": (("real-decoder", "real-eager"), "Qwen2 prefill with eager attention (MatMul, Softmax), "
                    "how users avoid the IsNaN the exporters add around SDPA"),
    "qwen2-kv-eager": (("real-decoder", "real-kv", "real-eager"), "Qwen2 decoding step with eager attention"),
    "llama": (("real-decoder",), "Llama causal LM prefill, as users export it"),
    "llama-kv": (("real-decoder", "real-kv"), "Llama decoding step with the KV cache as flat inputs and outputs"),
    "gemma": (("real-decoder",), "Gemma causal LM (multi-query attention, GELU-tanh MLP, scaled embeddings)"),
    "bert": (("real-encoder",), "BERT encoder with pooler (token types, erf GELU, LayerNorm)"),
    "bert-eager": (("real-encoder", "real-eager"), "BERT encoder with eager attention"),
    "whisper-encoder": (("real-encoder",), "Whisper audio encoder (Conv1d stem, sinusoidal positions)"),
    "vit": (("real-vision",), "ViT image classifier (patch Conv, CLS token, pre-norm blocks)"),
    "resnet": (("real-vision",), "ResNet18-like classifier (basic blocks, BatchNorm, max pool)"),
    "mobilenet-v2": (("real-vision",), "MobileNetV2 classifier (depthwise convs, ReLU6, TF-style padding)"),
    "convnext": (("real-vision",), "ConvNeXt classifier (7x7 depthwise, channels-last LayerNorm, layer scale)"),
}


def _specs() -> list[RealSpec]:
    specs = []
    for arch, (tags, guards) in ARCHITECTURES.items():
        for suffix, exporter in EXPORTERS.items():
            for opset in (None, OLDER_OPSET) if exporter == "torchscript" else (None,):  # dynamo writes 18 for 17
                name = f"real-{arch}-{suffix}" + (f"-op{opset}" if opset else "")
                specs.append(RealSpec(name, arch, exporter, opset, ("real", *tags, f"real-{exporter}"), guards))
    return specs


REAL: dict[str, RealSpec] = {spec.name: spec for spec in _specs()}
TAGS: frozenset[str] = frozenset(tag for spec in REAL.values() for tag in spec.tags)
