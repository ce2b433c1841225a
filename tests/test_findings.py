"""Findings and version ranges, pinned on synthetic results documents (no MNN needed)."""

from __future__ import annotations

from harness.records import CellRecord, Outcome, Results, RunInfo, ToolchainRecord, Verdict
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
