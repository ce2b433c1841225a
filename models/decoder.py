"""A tiny Qwen2-architecture decoder, exported the way MNN's LLM exporter does.

RMSNorm, rotary position embedding, grouped-query attention, a SiLU-gated MLP and an LM head tied
to (or untied from) the token embedding. Random weights from a config; well under a megabyte.

Inputs: `input_ids` [1, seq] int64, `attention_mask` [1, 1, seq, past+seq] (additive, 0 or -1e4),
`position_ids` [1, seq] int64, `past_key_values` [layers, 2, 1, kv_heads, past, head_dim] and
`logits_index` [1] int64 (which positions produce logits). Outputs: `logits` [1, 1, vocab] and
`presents`, the past for the next step. `seq`, `past` and `total` are dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from models import ModelSpec
from models.graph import INT64, Graph, run_onnxruntime

MASKED = -1e4


@dataclass(frozen=True)
class Config:
    vocab: int = 512
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 176
    layers: int = 2
    rope_theta: float = 10000.0
    eps: float = 1e-6
    tied: bool = True
    seed: int = 20

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def build(config: Config = Config()) -> onnx.ModelProto:
    c = config
    g = Graph("qwen2_tiny", seed=c.seed)
    ids = g.input("input_ids", [1, "seq"], INT64)
    mask = g.input("attention_mask", [1, 1, "seq", "total"])
    positions = g.input("position_ids", [1, "seq"], INT64)
    past = g.input("past_key_values", [c.layers, 2, 1, c.kv_heads, "past", c.head_dim])
    logits_index = g.input("logits_index", [1], INT64)

    embedding = g.weight(c.vocab, c.hidden, scale=0.5)
    x = g.op("Gather", [embedding, ids], axis=0)
    cos, sin = _rotary(g, c, positions)
    presents = []
    for layer in range(c.layers):
        attention, present = _attention(g, c, _rms_norm(g, c, x), cos, sin, mask, past, layer)
        presents.append(present)
        x = g.op("Add", [x, attention])
        x = g.op("Add", [x, _mlp(g, c, _rms_norm(g, c, x))])
    x = _rms_norm(g, c, x)
    selected = g.op("Gather", [x, logits_index], axis=1)
    head = g.op("Transpose", [embedding], perm=[1, 0]) if c.tied else g.weight(c.hidden, c.vocab, scale=0.1)
    g.output(g.op("MatMul", [selected, head]), "logits")
    g.output(g.op("Concat", presents, axis=0), "presents")
    return g.model(17)


def _linear(g: Graph, x: str, inputs: int, outputs: int, bias: bool = False) -> str:
    y = g.op("MatMul", [x, g.weight(inputs, outputs, scale=inputs ** -0.5)])
    return g.op("Add", [y, g.weight(outputs, scale=0.02)]) if bias else y


def _rms_norm(g: Graph, c: Config, x: str) -> str:
    variance = g.op("ReduceMean", [g.op("Pow", [x, g.const(2.0)])], axes=[-1], keepdims=1)
    normed = g.op("Div", [x, g.op("Sqrt", [g.op("Add", [variance, g.const(c.eps)])])])
    return g.op("Mul", [normed, g.const(1.0 + 0.1 * g.rng.standard_normal(c.hidden))])


def _rotary(g: Graph, c: Config, positions: str) -> tuple[str, str]:
    """cos and sin of the rotary angles, shaped [1, 1, seq, head_dim] to broadcast over heads."""
    inv_freq = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim))
    angles = g.op("Mul", [g.op("Unsqueeze", [g.op("Cast", [positions], to=onnx.TensorProto.FLOAT), g.ints(-1)]),
                          g.const(inv_freq.astype(np.float32))])
    angles = g.op("Unsqueeze", [g.op("Concat", [angles, angles], axis=-1), g.ints(1)])
    return g.op("Cos", [angles]), g.op("Sin", [angles])


def _rope(g: Graph, c: Config, x: str, cos: str, sin: str) -> str:
    half = c.head_dim // 2
    first = g.op("Slice", [x, g.ints(0), g.ints(half), g.ints(-1)])
    second = g.op("Slice", [x, g.ints(half), g.ints(c.head_dim), g.ints(-1)])
    rotated = g.op("Concat", [g.op("Neg", [second]), first], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])])


def _heads(g: Graph, c: Config, x: str, heads: int) -> str:
    """[1, seq, heads * head_dim] -> [1, heads, seq, head_dim]."""
    return g.op("Transpose", [g.op("Reshape", [x, g.ints(1, -1, heads, c.head_dim)])], perm=[0, 2, 1, 3])


def _attention(g: Graph, c: Config, x: str, cos: str, sin: str, mask: str, past: str, layer: int) -> tuple[str, str]:
    kv_width = c.kv_heads * c.head_dim
    q = _rope(g, c, _heads(g, c, _linear(g, x, c.hidden, c.hidden, bias=True), c.heads), cos, sin)
    k = _rope(g, c, _heads(g, c, _linear(g, x, c.hidden, kv_width, bias=True), c.kv_heads), cos, sin)
    v = _heads(g, c, _linear(g, x, c.hidden, kv_width, bias=True), c.kv_heads)
    layer_past = g.op("Gather", [past, g.const(np.array(layer, dtype=np.int64))], axis=0)  # [2, 1, kv, past, d]
    k = g.op("Concat", [g.op("Gather", [layer_past, g.const(np.array(0, np.int64))], axis=0), k], axis=2)
    v = g.op("Concat", [g.op("Gather", [layer_past, g.const(np.array(1, np.int64))], axis=0), v], axis=2)
    present = g.op("Unsqueeze", [g.op("Concat", [g.op("Unsqueeze", [k, g.ints(0)]),
                                                 g.op("Unsqueeze", [v, g.ints(0)])], axis=0), g.ints(0)])
    k, v = _repeat_kv(g, c, k), _repeat_kv(g, c, v)
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          g.const(c.head_dim ** -0.5)])
    weights = g.op("Softmax", [g.op("Add", [scores, mask])], axis=-1)
    merged = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [weights, v])], perm=[0, 2, 1, 3]),
                              g.ints(1, -1, c.hidden)])
    return _linear(g, merged, c.hidden, c.hidden), present


def _repeat_kv(g: Graph, c: Config, x: str) -> str:
    """Grouped-query attention: [1, kv, total, d] -> [1, heads, total, d], as exporters write repeat_kv."""
    groups = c.heads // c.kv_heads
    expanded = g.op("Expand", [g.op("Unsqueeze", [x, g.ints(2)]), g.ints(1, 1, groups, 1, 1)])
    return g.op("Reshape", [expanded, g.ints(1, c.heads, -1, c.head_dim)])


def _mlp(g: Graph, c: Config, x: str) -> str:
    gate = _linear(g, x, c.hidden, c.intermediate)
    silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
    return _linear(g, g.op("Mul", [silu, _linear(g, x, c.hidden, c.intermediate)]), c.intermediate, c.hidden)


# ---------------------------------------------------------------- inputs


def step_inputs(ids: np.ndarray, past: np.ndarray, config: Config = Config()) -> dict[str, np.ndarray]:
    """Inputs for one forward step over `ids` after `past` (logits for the last position only)."""
    seq, past_len = ids.shape[-1], past.shape[4]
    causal = np.triu(np.full((seq, past_len + seq), MASKED, np.float32), k=past_len + 1)
    return {"input_ids": ids.reshape(1, seq).astype(np.int64), "attention_mask": causal[None, None],
            "position_ids": np.arange(past_len, past_len + seq, dtype=np.int64)[None],
            "past_key_values": past.astype(np.float32), "logits_index": np.array([-1], np.int64)}


def empty_past(config: Config = Config()) -> np.ndarray:
    return np.zeros((config.layers, 2, 1, config.kv_heads, 0, config.head_dim), np.float32)


PROMPT = 8


def prefill_inputs(rng: np.random.Generator, config: Config = Config()) -> dict[str, np.ndarray]:
    return step_inputs(rng.integers(0, config.vocab, PROMPT), empty_past(config), config)


def decode_inputs(rng: np.random.Generator, config: Config = Config()) -> dict[str, np.ndarray]:
    """One new token after an 8-token prompt, with the prompt's real `presents` as the past."""
    tokens = rng.integers(0, config.vocab, PROMPT + 1)
    prefill = run_onnxruntime(build(config), step_inputs(tokens[:PROMPT], empty_past(config), config))
    return step_inputs(tokens[PROMPT:], prefill["presents"], config)


GUARD = ("Qwen2 exports: 'logits_index' / 'past_key_values ... is input but not found', "
         "SiLU 'Unary Op can not execute' across versions, --transformerFuse")
UNTIED = Config(tied=False, seed=21)

MODELS = [
    ModelSpec("qwen2-prefill", build, ("llm", "decoder", "transformer"),
              f"prefill of 8 tokens with an empty KV cache; {GUARD}", inputs=prefill_inputs),
    ModelSpec("qwen2-decode", build, ("llm", "decoder", "transformer"),
              f"one decode step on a real 8-token KV cache; {GUARD}", inputs=decode_inputs),
    ModelSpec("qwen2-untied-prefill", lambda: build(UNTIED), ("llm", "decoder", "transformer"),
              "prefill with an untied LM head: weight quantization of a separate head matrix",
              inputs=lambda rng: prefill_inputs(rng, UNTIED)),
]
