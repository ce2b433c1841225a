"""Micro models: one small graph per op pattern that LLM and vision models use."""

from __future__ import annotations

import math

import numpy as np

from models import ModelSpec
from models.graph import BOOL, FLOAT, INT64, Graph


def silu() -> Graph:
    g = Graph("silu")
    x = g.input("x", [1, 64, 32])
    g.output(g.op("Mul", [x, g.op("Sigmoid", [x])]), "y")
    return g


def gelu_erf() -> Graph:
    """GELU written exactly as MNN's converter template `(Erf(x*0.707106769)+1)*x*0.5` (FuseTemplateOp.cpp)."""
    g = Graph("gelu_erf")
    x = g.input("x", [1, 16, 64])
    erf = g.op("Erf", [g.op("Mul", [x, g.const(np.float32(0.707106769))])])
    g.output(g.op("Mul", [g.op("Mul", [g.op("Add", [erf, g.const(1.0)]), x]), g.const(0.5)]), "y")
    return g


def gelu_tanh() -> Graph:
    g = Graph("gelu_tanh")
    x = g.input("x", [1, 16, 64])
    cube = g.op("Mul", [g.op("Pow", [x, g.const(3.0)]), g.const(0.044715)])
    inner = g.op("Mul", [g.op("Add", [x, cube]), g.const(math.sqrt(2.0 / math.pi))])
    g.output(g.op("Mul", [g.op("Mul", [x, g.const(0.5)]), g.op("Add", [g.op("Tanh", [inner]), g.const(1.0)])]), "y")
    return g


def layernorm() -> Graph:
    g = Graph("layernorm", seed=1)
    x = g.input("x", [1, 16, 64])
    g.output(g.op("LayerNormalization", [x, g.weight(64, scale=1.0), g.weight(64, scale=0.1)], axis=-1,
                  epsilon=1e-5), "y")
    return g


def rmsnorm() -> Graph:
    g = Graph("rmsnorm", seed=2)
    x = g.input("x", [1, 16, 64])
    variance = g.op("ReduceMean", [g.op("Pow", [x, g.const(2.0)])], axes=[-1], keepdims=1)
    norm = g.op("Div", [x, g.op("Sqrt", [g.op("Add", [variance, g.const(1e-6)])])])
    g.output(g.op("Mul", [norm, g.weight(64, scale=1.0)]), "y")
    return g


def softmax() -> Graph:
    g = Graph("softmax")
    x = g.input("x", [1, 4, 16, 16])
    g.output(g.op("Softmax", [x], axis=-1), "y")
    return g


def matmul() -> Graph:
    g = Graph("matmul", seed=3)
    x = g.input("x", [1, 8, 64])
    g.output(g.op("MatMul", [x, g.weight(64, 48)]), "y")
    return g


def gemm() -> Graph:
    g = Graph("gemm", seed=4)
    x = g.input("x", [4, 64])
    g.output(g.op("Gemm", [x, g.weight(32, 64), g.weight(32, scale=0.1)], transB=1), "y")
    return g


def conv() -> Graph:
    g = Graph("conv", seed=5)
    x = g.input("x", [1, 8, 16, 16])
    g.output(g.op("Conv", [x, g.weight(16, 8, 3, 3), g.weight(16, scale=0.1)], pads=[1, 1, 1, 1]), "y")
    return g


def conv_depthwise() -> Graph:
    g = Graph("conv_depthwise", seed=6)
    x = g.input("x", [1, 16, 16, 16])
    g.output(g.op("Conv", [x, g.weight(16, 1, 3, 3), g.weight(16, scale=0.1)], pads=[1, 1, 1, 1], group=16,
                  strides=[2, 2]), "y")
    return g


def conv_transpose() -> Graph:
    g = Graph("conv_transpose", seed=7)
    x = g.input("x", [1, 8, 8, 8])
    g.output(g.op("ConvTranspose", [x, g.weight(8, 4, 4, 4), g.weight(4, scale=0.1)], strides=[2, 2],
                  pads=[1, 1, 1, 1]), "y")
    return g


def maxpool() -> Graph:
    g = Graph("maxpool")
    x = g.input("x", [1, 8, 16, 16])
    g.output(g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), "y")
    return g


def avgpool() -> Graph:
    g = Graph("avgpool")
    x = g.input("x", [1, 8, 16, 16])
    g.output(g.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                  count_include_pad=0), "y")
    return g


def resize() -> Graph:
    g = Graph("resize")
    x = g.input("x", [1, 4, 8, 8])
    scales = g.const(np.array([1, 1, 2, 2], dtype=np.float32))
    g.output(g.op("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="half_pixel"), "y")
    return g


def gather() -> Graph:
    g = Graph("gather", seed=8)
    ids = g.input("input_ids", [1, 8], INT64)
    g.output(g.op("Gather", [g.weight(100, 32, scale=1.0), ids], axis=0), "y")
    return g


def slice_() -> Graph:
    g = Graph("slice")
    x = g.input("x", [2, 16, 32])
    g.output(g.op("Slice", [x, g.ints(1, 4), g.ints(15, 32), g.ints(1, 2), g.ints(2, 3)]), "y")
    return g


def concat() -> Graph:
    g = Graph("concat")
    a, b = g.input("a", [1, 4, 8]), g.input("b", [1, 6, 8])
    g.output(g.op("Concat", [a, b], axis=1), "y")
    return g


def reshape() -> Graph:
    g = Graph("reshape")
    x = g.input("x", [2, 8, 16])
    g.output(g.op("Reshape", [x, g.ints(2, 8, 4, 4)]), "y")
    return g


def transpose() -> Graph:
    g = Graph("transpose")
    x = g.input("x", [1, 8, 4, 16])
    g.output(g.op("Transpose", [x], perm=[0, 2, 1, 3]), "y")
    return g


def expand() -> Graph:
    g = Graph("expand")
    x = g.input("x", [1, 1, 16])
    g.output(g.op("Expand", [x, g.ints(2, 8, 16)]), "y")
    return g


def where() -> Graph:
    g = Graph("where")
    cond, a, b = g.input("cond", [4, 16], BOOL), g.input("a", [4, 16]), g.input("b", [4, 16])
    g.output(g.op("Where", [cond, a, b]), "y")
    return g


def equal() -> Graph:
    g = Graph("equal")
    a, b = g.input("a", [4, 16], INT64), g.input("b", [4, 16], INT64)
    g.output(g.op("Equal", [a, b]), "y", dtype=BOOL)
    return g


def cast() -> Graph:
    g = Graph("cast")
    x = g.input("x", [4, 16])
    as_int = g.op("Cast", [g.op("Mul", [x, g.const(10.0)])], to=INT64)
    g.output(g.op("Cast", [as_int], to=FLOAT), "y")
    return g


def cumsum() -> Graph:
    g = Graph("cumsum")
    x = g.input("x", [2, 32])
    g.output(g.op("CumSum", [x, g.const(np.array(1, dtype=np.int64))]), "y")
    return g


def topk() -> Graph:
    g = Graph("topk")
    x = g.input("x", [2, 64])
    values, indices = g.op_multi("TopK", [x, g.ints(5)], 2, axis=-1)
    g.output(values, "values")
    g.output(indices, "indices", dtype=INT64)
    return g


def einsum() -> Graph:
    g = Graph("einsum", seed=9)
    q, k = g.input("q", [1, 4, 8, 16]), g.input("k", [1, 4, 8, 16])
    g.output(g.op("Einsum", [q, k], equation="bhid,bhjd->bhij"), "y")
    return g


def shape_start_end() -> Graph:
    """Shape(start=1, end=3) drives a Reshape and, summed, divides it: a wrong Shape is wrong in value too."""
    g = Graph("shape_start_end")
    x = g.input("x", [2, 3, 8, 16])
    dims = g.op("Shape", [x], start=1, end=3)
    dims_sum = g.op("ReduceSum", [g.op("Cast", [dims], to=FLOAT)], keepdims=0)
    g.output(g.op("Div", [g.op("Reshape", [x, g.op("Concat", [g.ints(-1), dims], axis=0)]), dims_sum]), "y")
    return g


def input_identity_cast() -> Graph:
    g = Graph("input_identity_cast")
    mask = g.op("Cast", [g.op("Identity", [g.input("attention_mask", [1, 16], INT64)])], to=FLOAT)
    g.output(g.op("Mul", [g.input("x", [1, 16]), mask]), "y")
    return g


def constant_of_shape_default() -> Graph:
    g = Graph("constant_of_shape_default")
    x = g.input("x", [2, 3, 16])
    zeros = g.op("ConstantOfShape", [g.op("Shape", [x])])  # no `value`: zeros
    # scaled up so that even tiny garbage (converters have left 1e-23 in it) is far beyond tolerance
    g.output(g.op("Add", [x, g.op("Mul", [zeros, g.const(1e30)])]), "y")
    return g


def gelu_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """x in [-4, 0], where tanh-approximated and exact GELU differ by up to 2.8e-3 of max |GELU(x)|, past the
    fp32 tolerance (1e-3); on standard normal inputs the difference (8e-5) would hide."""
    return {"x": rng.uniform(-4.0, 0.0, (1, 16, 64)).astype(np.float32)}


def _spec(builder, tags: str, guards: str, opset: int = 17, inputs=None) -> ModelSpec:
    name = "micro-" + builder.__name__.rstrip("_").replace("_", "-")
    return ModelSpec(name, lambda: builder().model(opset), ("micro", *tags.split()), guards, inputs=inputs)


MODELS = [
    _spec(silu, "activation llm", "SiLU as x*Sigmoid(x): converters from 3.0.1 on fuse it into a "
                                  "SiLU op that 2.9.4 and 3.0.0 runtimes reject ('Unary Op can not execute'), "
                                  "as with 3.x-converted Qwen2"),
    _spec(gelu_erf, "activation transformer", "erf GELU in the form MNN's converter fuses: 2.9.4 keeps it "
                                            "exact, 3.x converters swap in the tanh approximation (wrong-output "
                                            "on inputs in [-4, 0])", inputs=gelu_inputs),
    _spec(gelu_tanh, "activation transformer", "tanh-approximated GELU as Pow/Tanh, which no converter "
                                            "fuses: it must stay the tanh form (exact erf would fail on these "
                                            "inputs)", inputs=gelu_inputs),
    _spec(layernorm, "norm transformer", "LayerNormalization (opset 17): one LayerNorm op from 3.6.1's "
                                       "converter, decomposed by 3.0.0's; every runtime must match"),
    _spec(rmsnorm, "norm llm", "RMSNorm as Pow/ReduceMean/Sqrt/Div: 3.6.1's converter fuses it into "
                              "a LayerNorm op with an RMS flag (no --transformerFuse needed); a runtime "
                              "subtracting the mean would fail"),
    _spec(softmax, "activation attention", "last-axis Softmax of attention scores"),
    _spec(matmul, "linear llm", "MatMul against a weight: the op weight quantization rewrites"),
    _spec(gemm, "linear vision", "Gemm with transB, the classifier head pattern"),
    _spec(conv, "conv vision", "3x3 Conv with bias, the vision backbone op"),
    _spec(conv_depthwise, "conv vision", "strided depthwise Conv (group = channels)"),
    _spec(conv_transpose, "conv vision", "strided ConvTranspose, the upsampling op of generators"),
    _spec(maxpool, "pool vision", "padded strided MaxPool"),
    _spec(avgpool, "pool vision", "padded AveragePool with count_include_pad=0: pads must not be "
                                  "averaged in"),
    _spec(resize, "resize vision", "bilinear half-pixel Resize, a frequent cross-version numeric drift"),
    _spec(gather, "tensor llm", "token embedding lookup: Gather with int64 ids"),
    _spec(slice_, "tensor llm", "multi-axis Slice with steps"),
    _spec(concat, "tensor llm", "Concat of two inputs, as KV-cache appends do"),
    _spec(reshape, "tensor llm", "Reshape to split heads"),
    _spec(transpose, "tensor llm", "head Transpose of attention"),
    _spec(expand, "tensor llm", "Expand broadcasting, as attention-mask building does"),
    _spec(where, "logic llm", "Where with a bool condition, as causal masks do"),
    _spec(equal, "logic llm", "Equal on int64 ids, with a bool output"),
    _spec(cast, "logic", "float -> int64 -> float Cast round trip (truncation)"),
    _spec(cumsum, "reduction llm", "CumSum, used for position ids from attention masks"),
    _spec(topk, "reduction llm", "TopK values and int64 indices, as samplers do"),
    _spec(einsum, "linear attention", "Einsum attention scores (bhid,bhjd->bhij)"),
    _spec(shape_start_end, "tensor llm", "Shape with start/end (opset 15+): converters up to 3.2.0 ignore "
                                           "start/end, so the output has the wrong shape and values",
          opset=17),
    _spec(input_identity_cast, "tensor llm", "an input through Identity then Cast: converters up to 3.2.0 lose "
                                             "the input ('needs tensor identity_1 as an input', then SIGSEGV "
                                             "or a rejected model on every runtime)"),
    _spec(constant_of_shape_default, "tensor llm", "ConstantOfShape without `value` (zeros), as ONNX's expanded "
                                                   "Attention has: converters fill it with uninitialized memory, "
                                                   "scaled here so any garbage shows"),
]
