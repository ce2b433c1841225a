"""Findings and version ranges, pinned on synthetic results documents (no MNN needed)."""

from __future__ import annotations

import gzip
from pathlib import Path

from click.testing import CliRunner

from harness.cli import main
from harness.modelstore import PreparedModel
from harness.opsupport import coverage, op_support
from harness.records import CellRecord, ModelRecord, Outcome, Results, RunInfo, ToolchainRecord, Verdict
from harness.report import compact, write_results
from harness.report.findings import find
from harness.report.markdown import render_markdown
from harness.report.versions import VersionOrder

VERSIONS = {"src-2.9.4": "2.9.4", "pypi-3.6.1": "3.6.1", "pypi-3.0.0": "3.0.0", "src-latest": "latest",
            "pypi-3.2.0": "3.2.0"}  # deliberately not in version order
UNARY = Outcome(verdict=Verdict.UNSUPPORTED_OP, stage="run", reason="the runtime cannot execute a Unary op",
                ops=["Unary"], pattern="unary-op-cannot-execute", log_excerpt="ERROR: Unary Op can not execute")


def crash(signal: int) -> Outcome:
    return Outcome(verdict=Verdict.CRASH, stage="run", reason=f"worker died: SIGSEGV (signal {signal})")


def document(fail) -> Results:
    """Every converter x runtime x model x API; `fail(converter, runtime, model)` gives a failing outcome or None."""
    cells = [CellRecord(converter=k, runtime=r, model=m, variant="fp32", api=api,
                        outcome=fail(VERSIONS[k], VERSIONS[r], m) or Outcome(verdict=Verdict.PASS, stage="compare"))
             for k in VERSIONS for r in VERSIONS for m in ("silu", "conv") for api in ("module", "session")]
    run = RunInfo(started="", finished="t", duration_s=0, phases={}, jobs=1, resumed_cells=0,
                  selection={"narrowed": False}, harness={"version": "0"})
    return Results(run=run, host={"cores": 1, "cpu": "", "onnxruntime": ""}, settings={},
                   models=[], variants=[], conversions=[], cells=cells,
                   toolchains=[ToolchainRecord(id=t, kind="pypi", version=v, roles=["convert", "run"], status="ok")
                               for t, v in VERSIONS.items()])


def newer(a: str, b: str) -> bool:
    order = ["2.9.4", "3.0.0", "3.2.0", "3.6.1", "latest"]
    return order.index(a) >= order.index(b)


def test_toolchains_sort_by_version_with_latest_last() -> None:
    order = VersionOrder(document(lambda k, r, m: None))
    assert [order.label(t) for t in order.converters] == ["2.9.4", "3.0.0", "3.2.0", "3.6.1", "latest"]


def test_a_newer_converter_on_older_runtimes_is_one_finding_with_ranges_and_advice() -> None:
    results = document(lambda k, r, m: UNARY if m == "silu" and newer(k, "3.2.0") and not newer(r, "3.2.0")
                       else None)
    [finding] = find(results)
    assert finding.where == ["converted by ≥ 3.2.0 · run on ≤ 3.0.0"]
    assert len(finding.cells) == 3 * 2 * 2 and dict(finding.models) == {"silu": 12}
    assert (finding.convert_with, finding.run_on) == ("≤ 3.0.0", "≥ 3.2.0")
    assert finding.fixed_runtime == "pypi-3.2.0" and finding.fixed_converter == "" and not finding.still_latest
    assert finding.log_line == "ERROR: Unary Op can not execute"
    assert finding.bundle == ".mnn-matrix/reproducers/zoo/silu--fp32--pypi-3.6.1--to--src-2.9.4/reproduce.sh"


def test_a_finding_of_a_model_without_bundles_says_how_to_make_one_and_prefers_a_bundled_example() -> None:
    """The real family's models get no bundle from a full run (megabytes each): the finding names the command
    that makes one, unless a model with a bundle shows the same failure."""
    results = document(lambda k, r, m: UNARY if newer(k, "3.2.0") and not newer(r, "3.2.0") else None)
    model = ModelRecord(name="silu", sha256="", source="torch", tags=["real"], guards="", inputs={}, outputs=[])
    [finding] = find(results.model_copy(update={"models": [model]}))
    assert finding.example.model == "conv" and finding.bundle.endswith("conv--fp32--pypi-3.6.1--to--src-2.9.4/"
                                                                       "reproduce.sh")
    only_real = results.model_copy(update={"models": [model], "cells": [c for c in results.cells
                                                                         if c.model == "silu"]})
    [finding] = find(only_real)
    assert finding.bundle == ("python -m harness matrix --model silu --variant fp32 --converter pypi-3.6.1 "
                              "--runtime src-2.9.4 --reproducers")


def test_a_non_contiguous_set_is_named_exactly_and_messages_cluster_without_their_numbers() -> None:
    results = document(lambda k, r, m: crash(len(k) + len(r)) if k in ("2.9.4", "3.2.0") and r == "3.6.1" else None)
    [finding] = find(results)  # signal numbers differ between cells: still one cause
    assert finding.where == ["converted by 2.9.4, 3.2.0 · run on 3.6.1"]
    assert finding.run_on == "2.9.4, 3.0.0, 3.2.0, latest" and finding.convert_with == "3.0.0, 3.6.1, latest"


def test_pairs_that_are_no_product_are_split_into_exact_products() -> None:
    results = document(lambda k, r, m: UNARY if (k, r) in {("latest", "2.9.4"), ("latest", "3.0.0"),
                                                           ("3.6.1", "2.9.4")} else None)
    [finding] = find(results)
    assert finding.where == ["converted by 3.6.1 · run on 2.9.4", "converted by latest · run on ≤ 3.0.0"]


def test_findings_sort_by_models_then_pairings_and_new_ones_are_marked() -> None:
    def fail(k, r, m):
        if k == "latest" and r == "2.9.4":
            return crash(11)
        return UNARY if m == "silu" and r == "2.9.4" and k != "2.9.4" else None

    results = document(fail)
    baseline = document(lambda k, r, m: UNARY if m == "silu" and r == "2.9.4" and k != "2.9.4" else None)
    first, second = find(results, baseline)
    assert first.verdict == Verdict.CRASH and len(first.models) == 2 and first.new
    assert second.verdict == Verdict.UNSUPPORTED_OP and not second.new
    assert second.where == ["converted by 3.0.0 – 3.6.1 · run on 2.9.4"]  # latest -> 2.9.4 crashes first


def test_neutral_verdicts_are_never_findings() -> None:
    limit = Outcome(verdict=Verdict.API_UNSUPPORTED, stage="load", reason="the Session API cannot compute shapes")
    results = document(lambda k, r, m: limit if m == "conv" else None)
    assert find(results) == []
    markdown = render_markdown(results)
    assert "None: every counted run passes." in markdown and "## Not counted: API limits" in markdown


NODE_VERSIONS = {"pypi-3.6.1": "3.6.1", "pypi-3.0.0": "3.0.0", "pypi-3.2.0": "3.2.0"}  # not in version order
NODE_HOST = {"cores": 1, "cpu": "", "onnxruntime": "", "onnx": "", "system": "", "release": "", "machine": "",
             "python": "", "numpy": ""}
NODE_CASES = {  # case -> (op, form)
    "test_hardswish": ("HardSwish", "as-is"), "test_hardswish@const": ("HardSwish", "const"),
    "test_attention_a": ("Attention", "as-is"), "test_attention_b": ("Attention", "as-is"),
    "test_matmul_2d": ("MatMul", "as-is"), "test_add": ("Add", "as-is"), "test_add_bcast": ("Add", "as-is"),
}


def node_outcome(converter: str, runtime: str, case: str, api: str) -> Outcome:
    """HardSwish: models converted by >= 3.2.0 do not load on 3.0.0; Attention: converters before 3.6.1 reject it;
    MatMul: the Session API's output is wrong everywhere; Add: 3.0.0's Session API cannot take it (neutral)."""
    if case.startswith("test_hardswish") and converter != "3.0.0" and runtime == "3.0.0":
        return Outcome(verdict=Verdict.LOAD_ERROR, stage="load", pattern="invalid-buffer",
                       reason="the runtime rejects the model file (invalid buffer for MNN Module)",
                       log_excerpt="Invalidate buffer to create MNN Module")
    if case.startswith("test_attention") and converter != "3.6.1":
        return Outcome(verdict=Verdict.CONVERT_ERROR, stage="convert", ops=["Attention"],
                       reason="the converter does not support Attention", log_excerpt="Converted Failed!")
    if case == "test_matmul_2d" and api == "session":
        return Outcome(verdict=Verdict.WRONG_OUTPUT, stage="compare", reason="y: 4 of 12 elements outside atol")
    if case.startswith("test_add") and api == "session" and runtime == "3.0.0":
        return Outcome(verdict=Verdict.API_UNSUPPORTED, stage="load", reason="the Session API cannot compute shapes")
    return Outcome(verdict=Verdict.PASS, stage="compare")


def node_document(versions: dict[str, str] = NODE_VERSIONS, cases: dict = NODE_CASES, outcome=node_outcome
                  ) -> Results:
    """A node-suite results document with op support and coverage computed by the harness's own code."""
    toolchains = [ToolchainRecord(id=t, kind="pypi", version=v, roles=["convert", "run"], status="ok")
                  for t, v in versions.items()]
    cells = [CellRecord(converter=k, runtime=r, model=case, variant="fp32", api=api,
                        outcome=outcome(versions[k], versions[r], case, api))
             for k in versions for r in versions for case in cases for api in ("module", "session")]
    prepared = {case: PreparedModel(name=case, directory="", sha256="", source="onnx-node", guards="", recipe="",
                                    tags=(f"op:{op}", f"form:{form}"), inputs={}, outputs=("y",),
                                    onnxruntime="cannot run: NOT_IMPLEMENTED Attention(23)" if op == "Attention"
                                    else "agrees")
                for case, (op, form) in cases.items()}
    rows = op_support(cells, prepared, toolchains)
    run = RunInfo(started="", finished="t", duration_s=0, phases={}, jobs=1, resumed_cells=0,
                  selection={"narrowed": False}, harness={"version": "0"})
    return Results(suite="onnx-node", run=run, host=NODE_HOST,
                   settings={}, variants=[], conversions=[], cells=cells, toolchains=toolchains,
                   models=[ModelRecord(name=m.name, sha256="", source="onnx-node", tags=list(m.tags), guards="",
                                       inputs={}, outputs=["y"], onnxruntime=m.onnxruntime) for m in prepared.values()],
                   op_support=rows, coverage=coverage(rows, toolchains))


def test_node_op_rows_collapse_equal_versions_and_split_alike_ops_from_differing_ones() -> None:
    results = node_document()
    rows = {(row.support.op, row.support.form): row for row in compact.op_rows(results, VersionOrder(results))}
    assert set(rows) == {("HardSwish", "as-is"), ("HardSwish", "const"), ("Attention", "as-is"), ("MatMul", "as-is")}
    attention = rows["Attention", "as-is"]
    assert attention.own == "0/2 (≤ 3.2.0) · 2/2 (3.6.1)" and not attention.uniform
    assert (attention.since_converter, attention.since_runtime) == ("3.6.1", "3.0.0")
    assert attention.failing == ["converted by ≤ 3.2.0 · run on any"]
    hardswish = rows["HardSwish", "as-is"]
    assert hardswish.own == "1/1" and hardswish.failing == ["converted by ≥ 3.2.0 · run on 3.0.0"]
    matmul = rows["MatMul", "as-is"]  # fails alike on every pairing: only its figure, and the APIs' that differ
    assert matmul.uniform and matmul.figure == "0/1" and matmul.apis == "module 1/1 · session 0/1"
    markdown = render_markdown(results)
    assert "### Ops failing the same cases on every pairing (1)" in markdown
    assert "`MatMul` 0/1 (module 1/1 · session 0/1)" in markdown
    assert "| cannot run: NOT_IMPLEMENTED Attention(23) | 2 | Attention |" in markdown


def test_neutral_cells_of_the_node_suite_count_nowhere() -> None:
    results = node_document()
    assert not any(f.verdict == Verdict.API_UNSUPPORTED for f in find(results))
    rows = {(row.support.op, row.support.form) for row in compact.op_rows(results, VersionOrder(results))}
    assert ("Add", "as-is") not in rows


def test_report_with_a_baseline_marks_the_findings_it_lacks(tmp_path: Path) -> None:
    baseline = node_document(cases={k: v for k, v in NODE_CASES.items() if not k.startswith("test_hardswish")})
    write_results(node_document(), tmp_path / "now")
    (tmp_path / "before.json.gz").write_bytes(gzip.compress(baseline.model_dump_json().encode()))
    result = CliRunner().invoke(main, ["report", str(tmp_path / "now" / "results.json"),
                                       "--baseline", str(tmp_path / "before.json.gz")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "now" / "results.md").read_text()
    new = [line for line in markdown.splitlines() if line.startswith("**") and "🆕" in line]
    assert len(new) == 1 and "load-error" in new[0]
    assert 'class="new"' in (tmp_path / "now" / "results.html").read_text()


def test_the_node_table_stays_small_for_eleven_toolchains() -> None:
    """121 pairings of a node suite whose 120 ops fail on a different, non-contiguous set of pairings each, each for
    its own reason, with 240 onnxruntime opinions: results.md stays under 100 KB."""
    versions = {f"pypi-3.{minor}.0": f"3.{minor}.0" for minor in range(11)}
    cases = {f"test_operator_number_{i}_with_a_long_case_name_{j}": (f"Operator{i}", form)
             for i in range(120) for j, form in enumerate(("as-is", "const"))}

    def outcome(converter: str, runtime: str, case: str, api: str) -> Outcome:
        op, k, r = int(case.split("_")[3]), int(converter.split(".")[1]), int(runtime.split(".")[1])
        if (k * 7 + r * 3 + op) % 5 == 0 or (api == "session" and (op + r) % 4 == 0):
            return Outcome(verdict=Verdict.UNSUPPORTED_OP, stage="run", ops=[f"Operator{op}"],
                           reason=f"the runtime cannot execute Operator{op}", log_excerpt=f"Operator{op} not found")
        return Outcome(verdict=Verdict.PASS, stage="compare")

    results = node_document(versions, cases, outcome)
    results = results.model_copy(update={"op_support": [row.model_copy(update={"onnxruntime_flags": {
        f"{row.op}_{i}": f"disagrees: {row.op} differs ({i})" for i in range(2)}}) for row in results.op_support]})
    rows = compact.op_rows(results, VersionOrder(results))
    assert len(find(results)) == 120 and len([row for row in rows if not row.uniform]) == 240
    markdown = render_markdown(results)
    assert len(markdown.encode()) < 100_000, len(markdown.encode())
    assert "… and 95 smaller findings" in markdown and "… and 120 more (results.html has them all)" in markdown
