"""ONNX's node conformance suite: materialized once, exclusions recorded, op table from real MNN runs."""

from __future__ import annotations

import unittest
from pathlib import Path

import numpy as np
import onnx.backend.test
import pytest

from harness import nodesuite
from harness.matrix import run_matrix
from harness.onnx_backend import MNNBackendError, pairing_backend
from harness.progress import Progress
from harness.records import Verdict
from harness.selection import Selection
from harness.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cases(workspace: Workspace) -> dict[str, nodesuite.NodeCase]:
    """Every case of the installed onnx, materialized into the shared workspace (once per onnx version)."""
    return {c.name: c for c in nodesuite.materialize(workspace.root / "onnx-node", Progress(quiet=True))}


def test_every_case_is_either_runnable_on_disk_or_excluded_with_a_reason(cases, workspace: Workspace) -> None:
    assert len(cases) > 1500
    runnable = nodesuite.prepared(workspace.root / "onnx-node", list(cases.values()))
    assert len(runnable) > 1000
    for case in cases.values():
        if case.rule is None:
            model = runnable[case.name]
            assert model.load_reference() and model.tolerance == {"atol": 1e-7, "rtol": 1e-3}
            assert f"op:{case.op}" in model.tags
        else:
            assert case.rule in {rule for rule, _ in nodesuite.RULES} | {"onnxruntime-disagrees"} and case.reason


def test_a_second_materialization_does_no_generation_work(cases, workspace: Workspace,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx.backend.test.case.node as generators

    monkeypatch.setattr(generators, "collect_testcases", lambda *a: pytest.fail("generated the cases again"))
    again = nodesuite.materialize(workspace.root / "onnx-node", Progress(quiet=True))
    assert {c.name: c for c in again} == cases


@pytest.mark.parametrize(("case", "rule", "reason"), [
    ("test_adagrad", "training-op", "not meant for inference backends"),
    ("test_identity_sequence", "non-tensor-io", "(sequence or map) input"),
    ("test_optional_has_element_empty_optional_input", "non-tensor-io", "an absent optional input"),
    ("test_ai_onnx_ml_label_encoder_string_int", "unfeedable-dtype", "a object input"),
    ("test_cast_FLOAT_to_BFLOAT16", "unfeedable-dtype", "a bfloat16 output"),
    ("test_cast_FLOAT8E4M3FN_to_FLOAT", "unfeedable-dtype", "a float8_e4m3fn input"),
    ("test_simple_rnn_batchwise", "onnxruntime-disagrees", "Batchwise recurrent operations"),
    ("test_stft", "onnxruntime-disagrees", "differs from the expected output"),
])
def test_exclusion_rules(cases, case: str, rule: str, reason: str) -> None:
    assert (cases[case].rule, reason in cases[case].reason) == (rule, True), cases[case]


def test_expanded_cases_count_for_the_op_they_expand(cases) -> None:
    expanded = cases["test_softmax_axis_0_expanded"]
    assert expanded.expanded and expanded.op == "Softmax" and cases["test_softmax_axis_0"].op == "Softmax"


@pytest.fixture(scope="module")
def node_run(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains, cases):
    """A handful of real node cases through real MNN 3.0.0 and 3.6.1."""
    root = tmp_path_factory.mktemp("node")
    space = Workspace(root / "ws", shared_envs=workspace.envs)
    (root / "ws" / "onnx-node").mkdir(parents=True)
    (root / "ws" / "onnx-node").rmdir()
    (root / "ws" / "onnx-node").symlink_to(workspace.root / "onnx-node")  # reuse the materialized cases
    selection = Selection(toolchains=("pypi-3.0.0", "pypi-3.6.1"),
                          models=("Relu", "Shape", "AveragePool", "Identity", "test_equal", "test_less"))
    return run_matrix(REPO / "matrix.yaml", selection, space, jobs=2, fresh=True, progress=Progress(quiet=True),
                      suite="onnx-node")


def test_op_table_counts_cases_that_pass_every_cell_of_a_pairing(node_run) -> None:
    rows = {row.op: row for row in node_run.op_support}
    assert set(rows) == {"Relu", "Shape", "AveragePool", "Identity", "Equal", "Less"}
    for row in rows.values():
        for pair, support in row.pairs.items():
            converter, runtime = pair.split(" -> ")
            cases_passing = {c.model for c in node_run.cells if c.converter == converter and c.runtime == runtime
                             and f"op:{row.op}" in next(m.tags for m in node_run.models if m.name == c.model)}
            failing = {c.model for c in node_run.cells if c.converter == converter and c.runtime == runtime
                       and c.model in cases_passing and c.outcome.verdict != Verdict.PASS}
            assert support.run == len(cases_passing) == row.cases
            assert support.passed == len(cases_passing - failing)
    assert rows["Relu"].first_converter == "pypi-3.0.0" and rows["Relu"].first_runtime == "pypi-3.0.0"
    assert not rows["Relu"].converter_gaps and not rows["Relu"].runtime_gaps


def test_crashing_and_newer_ops_show_as_runtime_gaps(node_run) -> None:
    rows = {row.op: row for row in node_run.op_support}
    assert rows["AveragePool"].first_runtime is None  # some AveragePool cases kill every runtime (SIGFPE)
    assert any(c.outcome.verdict == Verdict.CRASH and "SIGFPE" in c.outcome.reason for c in node_run.cells)
    assert "pypi-3.6.1 -> pypi-3.0.0" in rows["Shape"].runtime_gaps  # Shape start/end from 3.6.1 on 3.0.0


def test_coverage_is_per_toolchain_in_onnx_report_terms(node_run) -> None:
    for score in node_run.coverage:
        pair = f"{score.toolchain} -> {score.toolchain}"
        assert score.ops_loaded == len(node_run.op_support)
        assert score.cases_run == sum(row.pairs[pair].run for row in node_run.op_support)
        assert score.ops_passed == sum(row.pairs[pair].passed == row.pairs[pair].run for row in node_run.op_support)
    assert {s.toolchain for s in node_run.coverage} == {"pypi-3.0.0", "pypi-3.6.1"}


def test_excluded_cases_are_in_the_results(node_run, cases) -> None:
    excluded = {c.name: c for c in node_run.excluded}
    assert {"test_identity_sequence", "test_identity_opt"} <= set(excluded)
    assert all(cases[name].rule == case.rule for name, case in excluded.items())
    assert next(row for row in node_run.op_support if row.op == "Identity").excluded == len(excluded)


def test_a_pairing_is_an_onnx_backend_that_onnx_own_runner_drives(workspace: Workspace, toolchains) -> None:
    backend = pairing_backend("pypi-3.6.1", "pypi-3.0.0", config=REPO / "matrix.yaml", workspace=workspace)
    tests = onnx.backend.test.BackendTest(backend, __name__)
    tests.include(r"^test_(relu|add_bcast|shape_start_1)_cpu$")
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(case)
                               for case in tests.test_cases.values())
    result = unittest.TextTestRunner(stream=open("/dev/null", "w")).run(suite)  # noqa: SIM115
    ran = result.testsRun - len(result.skipped)
    assert ran == 3 and len(result.errors) == 1 and not result.failures
    assert "test_shape_start_1" in str(result.errors[0][0])  # a 3.6.1 Shape(start) is too new for 3.0.0
    assert "load-error" in result.errors[0][1]


def test_the_backend_keeps_its_workers_between_models(workspace: Workspace, toolchains) -> None:
    from models.graph import Graph

    backend = pairing_backend("pypi-3.6.1", config=REPO / "matrix.yaml", workspace=workspace)
    g = Graph("relu")
    g.output(g.op("Relu", [g.input("x", [4])]), "y")
    model = g.model(17)
    for value in (-1.0, 2.0):
        [y] = backend.run_model(model, [np.full(4, value, np.float32)])
        assert y.dtype == np.float32 and (y == max(value, 0)).all()
    rep = backend.prepare(model)
    assert rep.pairing.converter.starts == 1 and rep.pairing.runtime.starts == 1
    g = Graph("bad")
    g.output(g.op("AveragePool", [g.input("x", [1, 1, 4, 4])], kernel_shape=[2, 2]), "y")
    with pytest.raises(MNNBackendError, match="crash at run: worker died: SIGFPE"):
        backend.run_model(g.model(17), [np.ones((1, 1, 4, 4), np.float32)])
