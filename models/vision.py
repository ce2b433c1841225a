"""Vision models: a MobileNetV2-style classifier and a three-input talking-head generator."""

from __future__ import annotations

import numpy as np
import onnx

from models import ModelSpec
from models.graph import Graph


def _conv(g: Graph, x: str, inputs: int, outputs: int, kernel: int = 1, stride: int = 1, group: int = 1) -> str:
    pad = kernel // 2
    return g.op("Conv", [x, g.weight(outputs, inputs // group, kernel, kernel), g.weight(outputs, scale=0.1)],
                kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4, group=group)


def _inverted_residual(g: Graph, x: str, inputs: int, outputs: int, stride: int, expand: int = 4) -> str:
    """1x1 expand -> HardSwish -> 3x3 depthwise -> HardSwish -> 1x1 project (+ x when shapes allow)."""
    wide = inputs * expand
    y = g.op("HardSwish", [_conv(g, x, inputs, wide)])
    y = g.op("HardSwish", [_conv(g, y, wide, wide, kernel=3, stride=stride, group=wide)])
    y = _conv(g, y, wide, outputs)
    return g.op("Add", [x, y]) if stride == 1 and inputs == outputs else y


def mobilenet() -> onnx.ModelProto:
    g = Graph("mobilenet_tiny", seed=40)
    x = g.input("image", [1, 3, 64, 64])
    x = _conv(g, x, 3, 16, kernel=3, stride=2)
    x = g.op("BatchNormalization", [x, g.const(1 + 0.1 * g.rng.standard_normal(16)), g.weight(16, scale=0.1),
                                    g.weight(16, scale=0.1), g.const(1 + 0.1 * np.abs(g.rng.standard_normal(16)))])
    x = g.op("HardSwish", [x])
    for inputs, outputs, stride in ((16, 16, 1), (16, 24, 2), (24, 24, 1), (24, 32, 2)):
        x = _inverted_residual(g, x, inputs, outputs, stride)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [g.op("HardSwish", [_conv(g, x, 32, 64)])])])
    g.output(g.op("Gemm", [x, g.weight(10, 64), g.weight(10, scale=0.1)], transB=1), "logits")
    return g.model(17)


def talking_head() -> onnx.ModelProto:
    """Face + 5 reference frames + an audio window -> a generated face, at 208x160."""
    g = Graph("talking_head", seed=41)
    face = g.input("face", [1, 3, 208, 160])
    reference = g.input("reference", [1, 15, 208, 160])
    audio = g.input("audio", [1, 29, 5])
    x = g.op("Relu", [_conv(g, g.op("Concat", [face, reference], axis=1), 18, 16, kernel=3, stride=2)])
    x = g.op("Relu", [_conv(g, x, 16, 32, kernel=3, stride=2)])  # [1, 32, 52, 40]
    sound = g.op("Relu", [g.op("Gemm", [g.op("Reshape", [audio, g.ints(1, 145)]), g.weight(32, 145),
                                        g.weight(32, scale=0.1)], transB=1)])
    x = g.op("Add", [x, g.op("Reshape", [sound, g.ints(1, 32, 1, 1)])])
    x = g.op("Relu", [g.op("ConvTranspose", [x, g.weight(32, 16, 4, 4, scale=0.05), g.weight(16, scale=0.1)],
                           strides=[2, 2], pads=[1, 1, 1, 1])])  # [1, 16, 104, 80]
    x = g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    g.output(g.op("Sigmoid", [_conv(g, x, 16, 3, kernel=3)]), "frame")
    return g.model(17)


MODELS = [
    ModelSpec("mobilenet-tiny", mobilenet, ("vision", "classifier"),
              "MobileNetV2-style inverted residuals: depthwise Conv, HardSwish, BatchNorm, Gemm head"),
    ModelSpec("talking-head", talking_head, ("vision", "generator", "multi-input"),
              "three-input generator (1x3x208x160, 1x15x208x160, 1x29x5), as talking-head models take"),
]
