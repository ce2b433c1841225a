"""A BERT-style transformer encoder block, as older (opset 13) exporters write it."""

from __future__ import annotations

import math

import numpy as np
import onnx

from models import ModelSpec
from models.graph import FLOAT, INT64, Graph

VOCAB, HIDDEN, HEADS, FFN, MAX_POSITIONS, SEQ = 256, 64, 4, 128, 64, 16


def _layer_norm(g: Graph, x: str) -> str:
    """LayerNorm decomposed into ReduceMean/Sub/Pow/Sqrt/Div, the pattern converters must fuse."""
    centered = g.op("Sub", [x, g.op("ReduceMean", [x], axes=[-1], keepdims=1)])
    variance = g.op("ReduceMean", [g.op("Pow", [centered, g.const(2.0)])], axes=[-1], keepdims=1)
    normed = g.op("Div", [centered, g.op("Sqrt", [g.op("Add", [variance, g.const(1e-12)])])])
    return g.op("Add", [g.op("Mul", [normed, g.const(1 + 0.1 * g.rng.standard_normal(HIDDEN))]),
                        g.weight(HIDDEN, scale=0.1)])


def _dense(g: Graph, x: str, inputs: int, outputs: int) -> str:
    return g.op("Add", [g.op("MatMul", [x, g.weight(inputs, outputs, scale=inputs ** -0.5)]),
                        g.weight(outputs, scale=0.02)])


def _gelu_erf(g: Graph, x: str) -> str:
    erf = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0))])])
    return g.op("Mul", [g.op("Mul", [x, g.op("Add", [erf, g.const(1.0)])]), g.const(0.5)])


def _split_heads(g: Graph, x: str) -> str:
    return g.op("Transpose", [g.op("Reshape", [x, g.ints(1, -1, HEADS, HIDDEN // HEADS)])], perm=[0, 2, 1, 3])


def bert_block() -> onnx.ModelProto:
    g = Graph("bert_block", seed=50)
    ids = g.input("input_ids", [1, "seq"], INT64)
    mask = g.input("attention_mask", [1, "seq"], INT64)
    length = g.op("Gather", [g.op("Shape", [ids]), g.ints(1)])
    positions = g.op("Slice", [g.weight(MAX_POSITIONS, HIDDEN, scale=0.5), g.ints(0), length, g.ints(0)])
    x = _layer_norm(g, g.op("Add", [g.op("Gather", [g.weight(VOCAB, HIDDEN, scale=0.5), ids], axis=0), positions]))
    additive = g.op("Mul", [g.op("Sub", [g.const(1.0), g.op("Cast", [g.op("Unsqueeze", [mask, g.ints(1, 2)])],
                                                                     to=FLOAT)]), g.const(-10000.0)])
    q, k, v = (_split_heads(g, _dense(g, x, HIDDEN, HIDDEN)) for _ in range(3))
    scores = g.op("Div", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          g.const(np.float32(math.sqrt(HIDDEN // HEADS)))])
    context = g.op("MatMul", [g.op("Softmax", [g.op("Add", [scores, additive])], axis=-1), v])
    context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), g.ints(1, -1, HIDDEN)])
    x = _layer_norm(g, g.op("Add", [x, _dense(g, context, HIDDEN, HIDDEN)]))
    x = _layer_norm(g, g.op("Add", [x, _dense(g, _gelu_erf(g, _dense(g, x, HIDDEN, FFN)), FFN, HIDDEN)]))
    g.output(x, "last_hidden_state")
    return g.model(13)


def _inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    mask = np.ones((1, SEQ), np.int64)
    mask[0, -3:] = 0  # padding at the end, as batched tokenizers produce
    return {"input_ids": rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64), "attention_mask": mask}


MODELS = [
    ModelSpec("bert-block", bert_block, ("transformer", "encoder"),
              "BERT-style encoder block: decomposed LayerNorm and erf GELU, fused differently across versions",
              inputs=_inputs),
]
