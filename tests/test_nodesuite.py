"""ONNX's node conformance suite: materialized once, exclusions recorded, op table from real MNN runs."""

from __future__ import annotations

import re
import unittest
from pathlib import Path

import numpy as np
import onnx.backend.test
import onnxruntime
import pytest

from harness import nodesuite
from harness.matrix import run_matrix
from harness.onnx_backend import MNNBackendError, pairing_backend
from harness.progress import Progress
from harness.records import NEUTRAL_VERDICTS, PairSupport, Verdict
from harness.selection import Selection
from harness.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cases(workspace: Workspace) -> dict[str, nodesuite.NodeCase]:
    """Every case of the installed onnx, materialized into the shared workspace (once per onnx version)."""
    return {c.name: c for c in nodesuite.materialize(workspace.root / "onnx-node", Progress(quiet=True))}


def test_every_case_is_either_converted_from_disk_or_excluded_with_a_reason(cases, workspace: Workspace) -> None:
    assert len(cases) > 2500  # about 1,880 ONNX cases and their const forms
    converted = nodesuite.prepared(workspace.root / "onnx-node", list(cases.values()))
    assert len(converted) == sum(case.rule is None for case in cases.values()) > 2500
    for case in cases.values():
        if case.rule is None:
            model = converted[case.name]
            assert model.tolerance == {"atol": 1e-7, "rtol": 1e-3} and set(model.load_reference()) == set(model.outputs)
            assert {f"op:{case.op}", f"form:{case.form}"} <= set(model.tags)
            assert model.onnxruntime == case.onnxruntime and model.run_skip == case.run_skip
            assert re.fullmatch(r"agrees|disagrees: .+|cannot run: .+", case.onnxruntime), case
        else:
            assert case.rule in {rule for rule, _ in nodesuite.RULES} and case.reason and case.form == "as-is"


def test_a_second_materialization_does_no_generation_work(cases, workspace: Workspace,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx.backend.test.case.node as generators

    monkeypatch.setattr(generators, "collect_testcases", lambda *a: pytest.fail("generated the cases again"))
    again = nodesuite.materialize(workspace.root / "onnx-node", Progress(quiet=True))
    assert {c.name: c for c in again} == cases


def test_two_materializations_give_the_same_cases_byte_for_byte(cases, workspace: Workspace, tmp_path: Path) -> None:
    again = nodesuite.materialize(tmp_path, Progress(quiet=True))
    assert [c.name for c in again] == list(cases) and {c.name: c for c in again} == cases
    ours = nodesuite.prepared(workspace.root / "onnx-node", again)
    theirs = nodesuite.prepared(tmp_path, again)
    assert {name: m.sha256 for name, m in ours.items()} == {name: m.sha256 for name, m in theirs.items()}


def test_the_cache_is_keyed_by_every_library_that_makes_a_case_or_a_reference(tmp_path: Path) -> None:
    name = nodesuite.cache_dir(tmp_path).name
    for version in (onnx.__version__, onnxruntime.__version__, np.__version__):
        assert version in name


@pytest.mark.parametrize(("case", "rule", "reason"), [
    ("test_adagrad", "training-op", "not meant for inference backends"),
    ("test_identity_sequence", "non-tensor-input", "a sequence input"),
    ("test_optional_has_element_empty_optional_input", "non-tensor-input", "an optional input"),
])
def test_only_cases_that_cannot_be_converted_are_excluded(cases, case: str, rule: str, reason: str) -> None:
    assert (cases[case].rule, reason in cases[case].reason) == (rule, True), cases[case]
    assert f"{case}@const" not in cases


@pytest.mark.parametrize(("case", "skip"), [
    ("test_cast_FLOAT_to_BFLOAT16", "a bfloat16 output ('output')"),
    ("test_cast_FLOAT8E4M3FN_to_FLOAT", "a float8_e4m3fn input ('input')"),
    ("test_ai_onnx_ml_label_encoder_string_int", "a string input"),
    ("test_split_to_sequence_1", "a sequence output"),
    ("test_quantizelinear_uint4", "a uint4 input ('y_zero_point')"),
    ("test_quantizelinear_uint4@const", "a uint4 output ('y')"),
])
def test_cases_no_api_can_feed_are_converted_but_not_run(cases, case: str, skip: str) -> None:
    assert cases[case].rule is None and skip in cases[case].run_skip, cases[case]


def test_onnxruntime_is_a_second_opinion_recorded_beside_the_case(cases, workspace: Workspace) -> None:
    converted = nodesuite.prepared(workspace.root / "onnx-node", list(cases.values()))
    assert cases["test_relu"].onnxruntime == "agrees" and "onnxruntime:agrees" in converted["test_relu"].tags
    assert cases["test_stft"].rule is None and cases["test_stft"].onnxruntime.startswith("disagrees: ")
    assert "onnxruntime:disagrees" in converted["test_stft"].tags
    assert cases["test_simple_rnn_batchwise"].onnxruntime.startswith("cannot run: ")
    assert "onnxruntime:cannot-run" in converted["test_simple_rnn_batchwise"].tags
    assert cases["test_cast_FLOAT_to_FLOAT8E4M3FN"].onnxruntime == "agrees"  # its raw bits, read as float8


def test_the_const_form_folds_every_non_data_input_into_an_initializer(cases, workspace: Workspace) -> None:
    converted = nodesuite.prepared(workspace.root / "onnx-node", list(cases.values()))
    for name, data in [("test_batchnorm_example", ["x"]), ("test_unsqueeze_axis_0", ["x"]),
                       ("test_reshape_reordered_all_dims", ["data"]), ("test_add", ["x", "y"]),
                       ("test_conv_with_strides_padding", ["x"])]:
        as_is, const = converted[name], converted.get(f"{name}@const")
        if len(data) == len(as_is.inputs):
            assert const is None, name  # nothing to fold: no const form
            continue
        model = onnx.load(str(const.onnx_path))
        assert list(const.inputs) == [i.name for i in model.graph.input] == data, name
        assert sorted(i.name for i in model.graph.initializer) == sorted(set(as_is.inputs) - set(data))
        assert "form:const" in const.tags and cases[const.name].form == "const" and const.onnxruntime == "agrees"
        reference = as_is.load_reference()
        assert all((const.load_reference()[k] == reference[k]).all() for k in reference)


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
                          models=("Relu", "Shape", "AveragePool", "Identity", "test_equal", "test_less",
                                  "test_unsqueeze_axis_0", "test_batchnorm_example", "test_cast_FLOAT_to_BFLOAT16"))
    return run_matrix(REPO / "matrix.yaml", selection, space, jobs=2, fresh=True, progress=Progress(quiet=True),
                      suite="onnx-node")


def test_op_table_counts_cases_whose_counted_cells_all_pass(node_run) -> None:
    tags = {m.name: dict(t.split(":", 1) for t in m.tags if ":" in t) for m in node_run.models}
    rows = {(row.op, row.form): row for row in node_run.op_support}
    assert set(rows) == {(t["op"], t["form"]) for t in tags.values()}
    assert {"Relu", "Shape", "AveragePool", "Identity", "Equal", "Less", "Unsqueeze", "BatchNormalization",
            "Cast"} == {op for op, _ in rows} and ("Unsqueeze", "const") in rows
    for (op, form), row in rows.items():
        names = {name for name, t in tags.items() if (t["op"], t["form"]) == (op, form)}
        for api, pairs in [("", row.pairs), *row.apis.items()]:
            for pair, support in pairs.items():
                counted = [c for c in node_run.cells if c.model in names and f"{c.converter} -> {c.runtime}" == pair
                           and api in ("", c.api) and c.outcome.verdict not in NEUTRAL_VERDICTS]
                failing = {c.model for c in counted if c.outcome.verdict != Verdict.PASS}
                assert (support.run, support.passed) == (len({c.model for c in counted}),
                                                         len({c.model for c in counted} - failing))
    assert rows["Relu", "as-is"].first_converter == "pypi-3.0.0" and rows["Relu", "as-is"].first_runtime == "pypi-3.0.0"
    assert not rows["Relu", "as-is"].converter_gaps and not rows["Relu", "as-is"].runtime_gaps


def test_a_session_api_limit_never_makes_an_op_look_unsupported(node_run) -> None:
    row = next(r for r in node_run.op_support if (r.op, r.form) == ("Unsqueeze", "as-is"))
    pair = "pypi-3.6.1 -> pypi-3.6.1"
    session = [c for c in node_run.cells if c.model == "test_unsqueeze_axis_0" and c.api == "session"]
    assert session and all(c.outcome.verdict == Verdict.API_UNSUPPORTED for c in session)
    assert row.apis["session"][pair].run == 0
    assert row.apis["module"][pair] == row.pairs[pair] == PairSupport(passed=1, run=1)


def test_batchnorm_crashes_every_converter_as_is_and_passes_as_deployed(node_run) -> None:
    rows = {(r.op, r.form): r for r in node_run.op_support if r.op == "BatchNormalization"}
    assert rows["BatchNormalization", "as-is"].converter_gaps == ["pypi-3.0.0", "pypi-3.6.1"]
    const = [c for c in node_run.cells if c.model == "test_batchnorm_example@const"]
    assert len(const) == 8 and all(c.outcome.verdict == Verdict.PASS for c in const)


def test_a_case_no_api_can_feed_is_converted_and_its_runs_are_not_run(node_run) -> None:
    name = "test_cast_FLOAT_to_BFLOAT16"
    assert {c.converter for c in node_run.conversions if c.model == name} == {"pypi-3.0.0", "pypi-3.6.1"}
    converted = {c.converter for c in node_run.conversions if c.model == name and c.outcome.verdict == Verdict.PASS}
    cells = [c for c in node_run.cells if c.model == name and c.converter in converted]
    assert cells and all(c.outcome.verdict == Verdict.NOT_RUN and "bfloat16 output" in c.outcome.reason
                         for c in cells)
    cast = next(r for r in node_run.op_support if r.op == "Cast")
    assert all(support.run == 0 for support in cast.pairs.values()) and name in cast.onnxruntime_flags


def test_crashing_and_newer_ops_show_as_runtime_gaps(node_run) -> None:
    rows = {row.op: row for row in node_run.op_support if row.form == "as-is"}
    assert rows["AveragePool"].first_runtime is None  # some AveragePool cases kill every runtime (SIGFPE)
    assert any(c.outcome.verdict == Verdict.CRASH and "SIGFPE" in c.outcome.reason for c in node_run.cells)
    assert "pypi-3.6.1 -> pypi-3.0.0" in rows["Shape"].runtime_gaps  # Shape start/end from 3.6.1 on 3.0.0


def test_coverage_is_per_toolchain_form_and_api_in_onnx_report_terms(node_run) -> None:
    for score in node_run.coverage:
        pair = f"{score.toolchain} -> {score.toolchain}"
        found = [(row.apis[score.api] if score.api else row.pairs)[pair] for row in node_run.op_support
                 if row.form == score.form]
        mine = [support for support in found if support.run]
        assert score.ops_loaded == len(mine) and score.cases_run == sum(p.run for p in mine)
        assert score.ops_passed == sum(p.passed == p.run for p in mine)
    assert {(s.toolchain, s.api, s.form) for s in node_run.coverage} == {
        (t, api, form) for t in ("pypi-3.0.0", "pypi-3.6.1") for api in ("", "module", "session")
        for form in ("as-is", "const")}


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
    assert [worker.starts for worker in rep.pairing.workers] == [1, 1]  # converter, runtime
    g = Graph("bad")
    g.output(g.op("AveragePool", [g.input("x", [1, 1, 4, 4])], kernel_shape=[2, 2]), "y")
    with pytest.raises(MNNBackendError, match="crash at run: worker died: SIGFPE"):
        backend.run_model(g.model(17), [np.ones((1, 1, 4, 4), np.float32)])
