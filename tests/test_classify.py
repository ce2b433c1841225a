"""Verdicts from real MNN failures: every pattern in harness/patterns.yaml is pinned by a real case here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import LLM_PATTERN_CASES, conv_model, run_request, save

import models
from harness import protocol, verdicts
from harness.records import Outcome, Verdict
from harness.supervisor import WorkerLost
from models.graph import INT64, Graph


def zoo_model(name: str, path: Path) -> Path:
    onnx.save(models.ZOO[name].build(), str(path))
    return path


def custom_op_model(path: Path) -> Path:
    """A node from a custom domain: no converter knows it."""
    h = onnx.helper
    graph = h.make_graph([h.make_node("FooBar", ["x"], ["y"], domain="com.example")], "custom",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def same_lower_pool(path: Path) -> Path:
    g = Graph("same_lower")
    g.output(g.op("AveragePool", [g.input("x", [1, 3, 32, 32])], kernel_shape=[2, 2], auto_pad="SAME_LOWER"), "y")
    return save(g, path)


def convert_outcome(worker, src: Path, tmp_path: Path) -> Outcome:
    reply = worker.request(protocol.convert_request(src, tmp_path / "out.mnn"))
    assert not reply.header["produced"], "expected the conversion to fail"
    return verdicts.classify("convert", reply.header["log"], reply.header.get("error", ""))


def converted(worker, src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / (src.stem + ".mnn")
    assert worker.request(protocol.convert_request(src, dst)).header["produced"]
    return dst


def run_outcome(worker, model: Path, inputs: dict, outputs: list[str], api: str) -> Outcome:
    """The outcome of a failing run, classified as the runner classifies it."""
    try:
        reply = worker.request(run_request(model, inputs, outputs, api), inputs)
    except WorkerLost as lost:
        return verdicts.lost(lost.kind, "run", lost.detail, lost.log_tail)
    assert not reply.header["ok"], "expected the run to fail"
    return verdicts.classify(reply.header["stage"], reply.header["log"], reply.header["error"])


@dataclass(frozen=True)
class Case:
    """A real failure and what the classifier must make of it."""

    pattern: str
    verdict: Verdict
    reproduce: Callable[..., Outcome]  # (worker_for, tmp_path) -> Outcome
    ops: list[str] | None = None
    reason: str = ""


def _unsupported_ops(version: str) -> Callable[..., Outcome]:
    return lambda w, p: convert_outcome(w(version), custom_op_model(p / "c.onnx"), p)


def _silu(api: str) -> Callable[..., Outcome]:
    """The field report: a 3.x-converted Qwen2 fails with 'Unary Op can not execute' on an older runtime."""
    return lambda w, p: run_outcome(w("3.0.0"), converted(w("3.6.1"), zoo_model("micro-silu", p / "s.onnx"), p),
                                    {"x": np.ones((1, 64, 32), np.float32)}, ["y"], api)


def _too_new(api: str) -> Callable[..., Outcome]:
    return lambda w, p: run_outcome(
        w("3.0.0"), converted(w("3.6.1"), zoo_model("micro-shape-start-end", p / "s.onnx"), p),
        {"x": np.ones((2, 3, 8, 16), np.float32)}, ["y"], api)


def _garbage_onnx(w, p: Path) -> Outcome:
    (p / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 40)
    return convert_outcome(w("3.6.1"), p / "garbage.onnx", p)


def _garbage_mnn(w, p: Path) -> Outcome:
    (p / "garbage.mnn").write_bytes(b"\x00garbage" * 100)
    return run_outcome(w("3.0.0"), p / "garbage.mnn", {"x": np.ones(4, np.float32)}, ["y"], "module")


def _conv_run(inputs: dict, outputs: list[str], api: str) -> Callable[..., Outcome]:
    def reproduce(w, p: Path) -> Outcome:
        full = {"x": np.ones((1, 8, 16, 16), np.float32), **inputs}
        return run_outcome(w("3.6.1"), converted(w("3.6.1"), conv_model(p / "conv.onnx"), p), full, outputs, api)
    return reproduce


def _same_lower(api: str) -> Callable[..., Outcome]:
    return lambda w, p: run_outcome(w("3.6.1"), converted(w("3.6.1"), same_lower_pool(p / "pool.onnx"), p),
                                    {"x": np.ones((1, 3, 32, 32), np.float32)}, ["y"], api)


def _graph(name: str, build: Callable[[Graph], None], opset: int = 17) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        g = Graph(name)
        build(g)
        return save(g, path, opset)
    return write


def _input_through_identities(g: Graph) -> None:
    """mask -> Identity -> Cast: the chain ONNX's expanded Attention tests have."""
    cast = g.op("Cast", [g.op("Identity", [g.input("mask", [2, 4])])], to=onnx.TensorProto.FLOAT)
    g.output(g.op("Add", [g.input("x", [2, 4]), cast]), "y")


def _reshape_to_input_shape(g: Graph) -> None:
    g.output(g.op("Reshape", [g.input("x", [2, 6]), g.input("shape", [2], INT64)]), "y")


def _int8_equal(g: Graph) -> None:
    """Equal on int8 tensors, cast inside the graph (pymnn cannot feed int8 inputs)."""
    int8 = onnx.TensorProto.INT8
    a, b = (g.op("Cast", [g.input(name, [4])], to=int8) for name in ("a", "b"))
    g.output(g.op("Equal", [a, b]), "y", dtype=onnx.TensorProto.BOOL)


def _int8_input(g: Graph) -> None:
    g.output(g.op("Cast", [g.input("x", [4], onnx.TensorProto.INT8)], to=onnx.TensorProto.FLOAT), "y")


def _int8_output(g: Graph) -> None:
    g.output(g.op("Cast", [g.input("x", [4])], to=onnx.TensorProto.INT8), "y", dtype=onnx.TensorProto.INT8)


def _uint8_bitshift(g: Graph) -> None:
    uint8 = onnx.TensorProto.UINT8
    g.output(g.op("BitShift", [g.input("x", [3], uint8), g.input("s", [3], uint8)], direction="LEFT"), "y", dtype=uint8)


def _batchnorm_training(path: Path) -> Path:
    """BatchNormalization in training mode: its running mean is an output the converter drops."""
    h, c = onnx.helper, 3
    params = [onnx.numpy_helper.from_array(np.full(c, value, np.float32), name)
              for name, value in (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))]
    node = h.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y", "running_mean"],
                       training_mode=1)
    graph = h.make_graph([node], "bn", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, c, 4])],
                         [h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in node.output],
                         params)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _identity(g: Graph) -> None:
    g.output(g.op("Identity", [g.input("x", [4])]), "y")


def _reverse_sequence(g: Graph) -> None:
    lengths = g.input("lengths", [4], INT64)
    g.output(g.op("ReverseSequence", [g.input("x", [4, 4]), lengths], batch_axis=0, time_axis=1), "y")


def _reduce_empty(g: Graph) -> None:
    g.output(g.op("ReduceMax", [g.input("x", [2, 0, 4]), g.ints(1)], keepdims=1), "y", shape=[2, 1, 4])


def _onehot_bomb(w, p: Path) -> Outcome:
    """ONNX's own OneHot case: MNN asks for 13 GB for a 3 x 12 output; the worker's address space refuses it."""
    import onnx.backend.test.case.node as generators

    [case] = [c for c in generators.collect_testcases(None) if c.name == "test_onehot_without_axis"]
    onnx.save(case.model, str(p / "onehot.onnx"))
    inputs = dict(zip((i.name for i in case.model.graph.input), map(np.asarray, case.data_sets[0][0]), strict=True))
    return run_outcome(w("3.6.1"), converted(w("3.6.1"), p / "onehot.onnx", p), inputs, ["y"], "module")


def _int64_add(g: Graph) -> None:
    g.output(g.op("Add", [g.input("a", [2], INT64), g.input("b", [2], INT64)]), "y", dtype=INT64)


def _constants_that_do_not_broadcast(path: Path) -> Path:
    """[2, 4] + [8, 4]: invalid ONNX (shape inference rejects it), written without the checking builder."""
    h = onnx.helper
    constants = [onnx.numpy_helper.from_array(np.ones(shape, np.float32), name)
                 for name, shape in (("a", (2, 4)), ("b", (8, 4)))]
    graph = h.make_graph([h.make_node("Add", ["a", "b"], ["s"]), h.make_node("Add", ["x", "s"], ["y"])], "bcast",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], constants)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(graph: Callable[[Path], Path], inputs: dict, api: str, converter: str = "3.6.1",
         runtime: str = "3.6.1") -> Callable[..., Outcome]:
    return lambda w, p: run_outcome(w(runtime), converted(w(converter), graph(p / "m.onnx"), p), inputs, ["y"], api)


CASES = {
    "unsupported-ops-3.0.0": Case("converter-unsupported-ops", Verdict.CONVERT_ERROR, _unsupported_ops("3.0.0"),
                                  ["FooBar"], "does not support FooBar"),
    "unsupported-ops-3.6.1": Case("converter-unsupported-ops", Verdict.CONVERT_ERROR, _unsupported_ops("3.6.1"),
                                  ["FooBar"], "does not support FooBar"),
    "garbage-onnx": Case("converter-check-failed", Verdict.CONVERT_ERROR, _garbage_onnx,
                         reason="read onnx model failed"),
    "silu-module": Case("unary-op-cannot-execute", Verdict.UNSUPPORTED_OP, _silu("module"), ["Unary"]),
    "silu-session": Case("unary-op-cannot-execute", Verdict.UNSUPPORTED_OP, _silu("session"), ["Unary"]),
    "too-new-module": Case("invalid-buffer", Verdict.LOAD_ERROR, _too_new("module")),
    "too-new-session": Case("invalid-buffer", Verdict.LOAD_ERROR, _too_new("session")),
    "garbage-mnn": Case("invalid-buffer", Verdict.LOAD_ERROR, _garbage_mnn),
    "missing-file": Case("cannot-open-model", Verdict.LOAD_ERROR, lambda w, p: run_outcome(
        w("3.0.0"), p / "missing.mnn", {"x": np.ones(4, np.float32)}, ["y"], "module")),
    "extra-output": Case("output-not-found", Verdict.LOAD_ERROR, _conv_run({}, ["y", "logits"], "module"),
                         reason="no output logits"),
    "same-lower-module": Case("compute-shape-error", Verdict.SHAPE_ERROR, _same_lower("module"),
                              reason="for tensor averagepool_1"),
    "identity-chain-3.0.0": Case("input-not-found", Verdict.CRASH, _run(
        _graph("chain", _input_through_identities), {"mask": np.ones((2, 4), np.float32),
                                                     "x": np.ones((2, 4), np.float32)}, "module", "3.0.0", "3.0.0"),
        reason="SIGSEGV"),
    "session-shape-from-input": Case("session-needs-input-content", Verdict.API_UNSUPPORTED, _run(
        _graph("reshape", _reshape_to_input_shape), {"x": np.ones((2, 6), np.float32),
                                                     "shape": np.array([3, 4], np.int64)}, "session"),
        reason="use the Module API"),
    "int8-binary-session": Case("cpu-unsupported-data-type", Verdict.UNSUPPORTED_OP, _run(
        _graph("equal", _int8_equal), {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, "session"),
        ["Binary"]),
    "int8-input-module": Case("api-cannot-create-dtype", Verdict.API_UNSUPPORTED, _run(
        _graph("int8_input", _int8_input), {"x": np.ones(4, np.int8)}, "module"), reason="int8"),
    "int8-input-session": Case("api-cannot-create-dtype", Verdict.API_UNSUPPORTED, _run(
        _graph("int8_input", _int8_input), {"x": np.ones(4, np.int8)}, "session"), reason="Session API"),
    "output-missing-in-session": Case("output-missing-in-session", Verdict.LOAD_ERROR, lambda w, p: run_outcome(
        w("3.0.0"), converted(w("3.0.0"), _batchnorm_training(p / "bn.onnx"), p),
        {"x": np.ones((2, 3, 4), np.float32)}, ["y", "running_mean"], "session"), reason="no output running_mean"),
    "create-execution-error": Case("create-execution-error", Verdict.UNSUPPORTED_OP, _run(
        _graph("bitshift", _uint8_bitshift), {"x": np.ones(3, np.uint8), "s": np.ones(3, np.uint8)}, "module",
        "3.0.0", "3.0.0"), reason="error 7"),
    "int8-output-session": Case("output-dtype-unreadable", Verdict.API_UNSUPPORTED, _run(
        _graph("int8_output", _int8_output), {"x": np.ones(4, np.float32)}, "session", "3.0.0", "3.0.0"),
        reason="output y"),
    "onehot-bomb": Case("allocation-failed", Verdict.OUT_OF_MEMORY, _onehot_bomb, reason="memory limit"),
    "no-ops": Case("model-without-ops", Verdict.LOAD_ERROR, _run(
        _graph("identity", _identity), {"x": np.ones(4, np.float32)}, "session", "3.2.0", "3.2.0"),
        reason="no ops"),
    "op-info-error": Case("op-info-error", Verdict.UNSUPPORTED_OP, _run(
        _graph("reverse", _reverse_sequence), {"x": np.ones((4, 4), np.float32),
                                               "lengths": np.array([0, 2, 3, 4], np.int64)}, "module",
        "3.0.0", "3.0.0"), ["ReverseSequence"]),
    "zero-size-buffer": Case("zero-size-buffer", Verdict.SHAPE_ERROR, _run(
        _graph("reduce_empty", _reduce_empty, 18), {"x": np.ones((2, 0, 4), np.float32)}, "session", "3.0.0"),
        reason="size 0"),
    "int64-beyond-int32": Case("input-narrowed", Verdict.LOAD_ERROR, _run(
        _graph("int64_add", _int64_add), {"a": np.array([1, 2**40]), "b": np.ones(2, np.int64)}, "module"),
        reason="cannot hold"),
    "gru-from-3.6.1-on-3.0.0": Case("reshape-error", Verdict.SHAPE_ERROR, lambda w, p: run_outcome(
        w("3.0.0"), converted(w("3.6.1"), zoo_model("seq-gru", p / "gru.onnx"), p),
        {"frames": np.ones((24, 1, 16), np.float32), "events": np.ones((10, 1, 8), np.float32)}, ["scores"],
        "module"), ["Reshape"], reason="160 -> 16"),
    "broadcast": Case("broadcast-error", Verdict.SHAPE_ERROR, _run(
        _constants_that_do_not_broadcast, {"x": np.ones((2, 4), np.float32)}, "module"),
        reason="dim1 = 8, dim2 = 2"),
    "same-lower-session": Case("compute-shape-error", Verdict.SHAPE_ERROR, _same_lower("session"),
                               reason="for tensor averagepool_1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_failures_get_the_right_verdict(worker_for, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    outcome = case.reproduce(worker_for, tmp_path)
    assert (outcome.verdict, outcome.pattern) == (case.verdict, case.pattern), outcome
    assert case.reason in outcome.reason, outcome
    if case.ops is not None:
        assert outcome.ops == case.ops
    assert outcome.log_excerpt, "a failing cell keeps the log lines that justify it"


def test_every_pattern_is_pinned_by_a_real_case() -> None:
    """Here, or (the LLM runtime's, which need MNN's LLM exporter) in tests/test_llm.py."""
    pinned_in_test_llm = {pattern for _, pattern in LLM_PATTERN_CASES}
    assert {p["id"] for p in verdicts.patterns()} == {case.pattern for case in CASES.values()} | pinned_in_test_llm


def test_a_failure_no_pattern_explains_is_unclassified_never_a_pass(worker_for, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdicts, "patterns", lambda: ())
    outcome = _same_lower("module")(worker_for, tmp_path)
    assert outcome.verdict == Verdict.UNCLASSIFIED and outcome.pattern is None
    assert "Compute Shape Error" in outcome.log_excerpt and "forward returned 0 outputs" in outcome.reason
