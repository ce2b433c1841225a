"""Multi-input recurrent sequence models: two inputs of different lengths, GRU/LSTM layers, Gemm head."""

from __future__ import annotations

from collections.abc import Callable

import onnx

from models import ModelSpec
from models.graph import Graph

Layer = Callable[[Graph, str, int, int], tuple[str, str]]
FRAMES, EVENTS = 24, 10  # the two inputs' lengths (dynamic axes t1, t2)


def _gru(g: Graph, x: str, inputs: int, hidden: int) -> tuple[str, str]:
    """A PyTorch-style GRU (linear_before_reset); returns Y [t, 1, batch, hidden] and Y_h [1, batch, hidden]."""
    scale = hidden ** -0.5
    y, y_h = g.op_multi("GRU", [x, g.weight(1, 3 * hidden, inputs, scale=scale), g.weight(1, 3 * hidden, hidden,
                        scale=scale), g.weight(1, 6 * hidden, scale=0.1)], 2, hidden_size=hidden,
                        linear_before_reset=1)
    return y, y_h


def _lstm(g: Graph, x: str, inputs: int, hidden: int) -> tuple[str, str]:
    scale = hidden ** -0.5
    y, y_h, _ = g.op_multi("LSTM", [x, g.weight(1, 4 * hidden, inputs, scale=scale), g.weight(1, 4 * hidden, hidden,
                           scale=scale), g.weight(1, 8 * hidden, scale=0.1)], 3, hidden_size=hidden)
    return y, y_h


def _head(g: Graph, states: list[str], width: int) -> None:
    """Concatenated final states -> Gemm -> Relu -> Gemm: 4 scores."""
    x = g.op("Squeeze", [g.op("Concat", states, axis=-1), g.ints(0)])  # [batch, width]
    x = g.op("Relu", [g.op("Gemm", [x, g.weight(16, width), g.weight(16, scale=0.1)], transB=1)])
    g.output(g.op("Gemm", [x, g.weight(4, 16), g.weight(4, scale=0.1)], transB=1), "scores")


def _two_inputs(name: str, seed: int, first: Layer, second: Layer, events_layer: Layer) -> onnx.ModelProto:
    """frames -> first -> second, events -> events_layer; both final states -> head."""
    g = Graph(name, seed=seed)
    frames, events = g.input("frames", ["t1", 1, 16]), g.input("events", ["t2", 1, 8])
    y, _ = first(g, frames, 16, 32)
    _, frames_state = second(g, g.op("Squeeze", [y, g.ints(1)]), 32, 32)
    _, events_state = events_layer(g, events, 8, 16)
    _head(g, [frames_state, events_state], 48)
    return g.model(17)


def gru_lstm() -> onnx.ModelProto:
    return _two_inputs("seq_gru", 30, _gru, _lstm, _gru)


def lstm() -> onnx.ModelProto:
    return _two_inputs("seq_lstm", 31, _lstm, _lstm, _lstm)


GUARD = "quantizing multi-input GRU sequence models: 'Compute Shape Error', segfaults, large errors"
DIMS = {"t1": FRAMES, "t2": EVENTS}

MODELS = [
    ModelSpec("seq-gru", gru_lstm, ("sequence", "rnn"), f"GRU and LSTM layers on two inputs; {GUARD}", DIMS),
    ModelSpec("seq-lstm", lstm, ("sequence", "rnn"), f"LSTM-only variant; {GUARD}", DIMS),
]
