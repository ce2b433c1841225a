"""Build the tiny LLMs of the `llm` suite, in the exporter venv (torch, transformers, tokenizers), offline.

Usage: python make_models.py JOBS.json, where JOBS.json is a list of {"name", "arch", "dir", "prompt", "new_tokens",
"penalty", "seed"}. Each model is a seeded random decoder built from a transformers config, saved with a tiny
byte-level BPE tokenizer (vocab.json, merges.txt, tokenizer.json), and `reference.json`: transformers' fp32 greedy ids
for the prompt (plain, and with the repetition penalty MNN's sampler hard-codes before 3.1) and the first step's
logits. Standalone: it does not import the harness.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SENTENCES = ["hello world", "the quick brown fox jumps over the lazy dog", "mnn runs small language models",
             "a tiny tokenizer for tests", "0 1 2 3 4 5 6 7 8 9"]
VOCAB = 320  # byte-level alphabet (256) plus a few merges and the special tokens
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# 128 wide: exporters of 3.0 and 3.1 quantize in blocks of 128 along the input channels (narrower fails or is garbage)
SIZES = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 256}


def tokenizer(directory: Path):
    """Train a byte-level BPE on a few sentences and save it in both forms exporters read."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(SENTENCES, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=SPECIAL[0], pad_token=SPECIAL[0],
                                   bos_token=SPECIAL[1])
    fast.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    fast.save_pretrained(directory)
    bpe.model.save(str(directory))  # vocab.json + merges.txt
    return fast


def two_valued(shape):
    """Random weights: each row takes two values, 0 and ±m (m = 2^-1, 2^-2 or 2^-3 and the sign drawn per row), both
    in every 16 inputs (at random places). Every linear 4- and 8-bit quantization MNN applies, per channel or per block
    of 16·n inputs, stores them exactly: asymmetric with a float minimum (the converter's default), asymmetric with an
    integral zero point (3.x exporters' own), and symmetric (what 2.9.x's exporter gets: the converter reads its bare
    `--weightQuantAsymmetric` as false); so do bf16 and fp16. (A row with both signs cannot be exact under the last
    two at once.) Every variant's package then computes what transformers computes: quantization error would hide
    breaks."""
    import torch

    ones = torch.randint(0, 2, (*shape[:-1], shape[-1] // 16, 16))
    ones[..., 0], ones[..., 1] = 0, 1
    ones = ones.gather(-1, torch.rand(ones.shape).argsort(-1)).reshape(shape)
    signs = torch.randint(0, 2, (*shape[:-1], 1)) * 2 - 1
    return ones.float() * signs * 2.0 ** -torch.randint(1, 4, (*shape[:-1], 1))


def model(arch: str, vocab: int, seed: int):
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(SIZES, vocab_size=vocab, torch_dtype="float32", bos_token_id=1, eos_token_id=0, pad_token_id=0)
    if arch == "qwen2-tied":
        config = transformers.Qwen2Config(**common, tie_word_embeddings=True)
    elif arch == "qwen2":
        config = transformers.Qwen2Config(**common, tie_word_embeddings=False)
    elif arch == "llama":
        config = transformers.LlamaConfig(**common, tie_word_embeddings=False)
    else:
        raise ValueError(f"unknown arch {arch}")
    config.architectures = [{"llama": "LlamaForCausalLM"}.get(arch, "Qwen2ForCausalLM")]
    built = transformers.AutoModelForCausalLM.from_config(config).eval()
    if arch.startswith("qwen2"):  # as Qwen2's instruct models: <|im_end|> or <|endoftext|> ends a reply (a list)
        built.generation_config.eos_token_id = [SPECIAL.index("<|im_end|>"), SPECIAL.index("<|endoftext|>")]
    with torch.no_grad():
        for name, parameter in built.named_parameters():
            if parameter.dim() > 1:
                parameter.copy_(two_valued(parameter.shape))
            elif name.endswith("norm.weight"):  # unquantized: ±1 or ±1/2, signs undoing the rows' one-signedness
                signs = torch.randint(0, 2, parameter.shape) * 2 - 1
                parameter.copy_(signs * 2.0 ** -torch.randint(0, 2, parameter.shape))
    return built


def build(job: dict) -> None:
    import torch

    directory = Path(job["dir"])
    directory.mkdir(parents=True, exist_ok=True)
    fast = tokenizer(directory)
    built = model(job["arch"], len(fast), job["seed"])
    built.save_pretrained(directory, safe_serialization=True)
    ids = torch.tensor([job["prompt"]])
    with torch.no_grad():
        logits = built(ids).logits[0, -1].tolist()
        greedy = {name: built.generate(ids, max_new_tokens=job["new_tokens"], min_new_tokens=job["new_tokens"],
                                       do_sample=False, eos_token_id=None, pad_token_id=0, repetition_penalty=penalty
                                       )[0, ids.shape[1]:].tolist()
                  for name, penalty in (("ids", 1.0), ("penalized_ids", job["penalty"]))}
    (directory / "reference.json").write_text(json.dumps({**greedy, "logits": logits}))


if __name__ == "__main__":
    for entry in json.loads(Path(sys.argv[1]).read_text()):
        build(entry)
