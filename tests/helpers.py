"""Real models and requests the tests share."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import onnx

from harness import protocol
from models.graph import Graph


def save(graph: Graph, path: Path, opset: int = 17) -> Path:
    onnx.save(graph.model(opset), str(path))
    return path


def avgpool_without_strides(path: Path) -> Path:
    """AveragePool with no `strides` attribute: real MNN 3.0.0 and 3.6.1 die of SIGFPE running it."""
    g = Graph("avgpool_no_strides")
    g.output(g.op("AveragePool", [g.input("x", [1, 3, 32, 32])], kernel_shape=[2, 2]), "y")
    return save(g, path)


def conv_model(path: Path, channels: int = 8, size: int = 16, layers: int = 1) -> Path:
    """A stack of 3x3 convolutions: cheap with one layer, slow with many at a large size."""
    g = Graph("conv_stack", seed=1)
    x = g.input("x", [1, channels, size, size])
    for _ in range(layers):
        x = g.op("Conv", [x, g.weight(channels, channels, 3, 3)], pads=[1, 1, 1, 1])
    g.output(x, "y")
    return save(g, path)


def run_request(model: Path, inputs: dict[str, np.ndarray], outputs: list[str], api: str = "module",
                repeat: int = 1) -> dict:
    return protocol.run_request(model, api, inputs, outputs, repeat=repeat)


def stored_runs(store: Path) -> dict[str, dict]:
    """The runs a matrix run has stored so far, by run key (read while it writes)."""
    if not store.exists():
        return {}
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        try:
            return {key: json.loads(record) for key, record in db.execute("SELECT key, record FROM runs")}
        except sqlite3.OperationalError:  # not created yet
            return {}


# The LLM runtime's patterns, each pinned on a real package by tests/test_llm.py (model, pattern).
LLM_PATTERN_CASES = [("tiny-qwen2", "llm-module-load-failed"), ("tiny-qwen2-tied", "llm-embedding-file-missing")]
