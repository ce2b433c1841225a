"""The nightly workflow's logic, night by night, against a local bare repository standing in for GitHub: the first
night (no published branch), an ordinary night, a night with a regression, a night whose build or matrix fails.
The zoo's and node suite's documents are synthetic (built from harness.records), so no MNN runs here; the llm suite's
is the committed real run (results/llm/)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.publish.compare import ISSUE_LIMIT, compare_suites, issue_body
from harness.records import (
    CellRecord,
    ModelRecord,
    Outcome,
    Results,
    RunInfo,
    ToolchainRecord,
    VariantRecord,
    Verdict,
)
from harness.report import document, read_results

TOOLCHAINS = ("pypi-3.0.0", "pypi-3.6.1", "src-2.9.4")
NODE_CASES = 560  # 3 x 3 pairings x 560 cases: over 5000 cells, so the node suite's document is gzipped
LINK = "https://github.com/owner/mnn-matrix/blob/results"
LLM_RUN = Path(__file__).resolve().parent.parent / "results" / "llm" / "results.json.gz"  # nox -s matrix -- --suite llm
NIGHTS = ("2026-01-01T03:00:00+0000", "2026-01-02T03:00:00+0000", "2026-01-03T03:00:00+0000",
          "2026-01-04T03:00:00+0000", "2026-01-05T03:00:00+0000")


def run_document(suite: str, finished: str, failing: dict[tuple[str, str, str], Verdict] | None = None,
                 unavailable: tuple[str, ...] = ()) -> Results:
    """A run of every available converter x runtime over the suite's models; all pass but `failing`."""
    failing = failing or {}
    names = [f"case_{i}" for i in range(NODE_CASES)] if suite == "onnx-node" else ["micro-silu", "decoder"]
    available = [t for t in TOOLCHAINS if t not in unavailable]
    cells = []
    for converter in available:
        for runtime in available:
            for name in names:
                verdict = failing.get((converter, runtime, name), Verdict.PASS)
                cells.append(CellRecord(converter=converter, runtime=runtime, model=name, variant="fp32",
                                        api="module", outcome=Outcome(verdict=verdict, stage="run",
                                                                      reason="" if verdict == "pass" else "boom")))
    return Results(
        suite=suite, host={}, settings={}, conversions=[], cells=cells,
        run=RunInfo(started=finished, finished=finished, duration_s=1.0, phases={}, jobs=1, resumed_cells=0,
                    selection={}, harness={"digest": "0123456789abcdef"}),
        toolchains=[ToolchainRecord(id=t, kind="pypi", version=t[-5:], roles=["converter", "runtime"],
                                    status="unavailable" if t in unavailable else "ok",
                                    reason="build failed: make exited 2" if t in unavailable else "")
                    for t in TOOLCHAINS],
        models=[ModelRecord(name=n, sha256="0" * 64, source=suite, tags=[], guards="", inputs={}, outputs=["y"])
                for n in names],
        variants=[VariantRecord(id="fp32", flags=[], tolerance={"max_abs_ratio": 0.01})])


def llm_run(finished: str, regressed: bool = False) -> Results:
    """The committed llm run as finished at `finished`; `regressed`: one cell that passes there gets the outcome of a
    cell that crashes in it (another pairing of the same run), as a run where that pairing broke would record."""
    results = read_results(LLM_RUN)
    cells = results.cells
    if regressed:
        verdicts = {c.outcome.verdict for c in cells}
        assert {Verdict.CRASH, Verdict.PASS} <= verdicts, f"{LLM_RUN} needs a crash and a pass for this test"
        crash = next(c for c in cells if c.outcome.verdict == Verdict.CRASH)
        at = next(i for i, c in enumerate(cells) if c.outcome.verdict == Verdict.PASS)
        cells = [*cells[:at], cells[at].model_copy(update={"outcome": crash.outcome}), *cells[at + 1:]]
    return results.model_copy(update={"cells": cells, "run": results.run.model_copy(update={"finished": finished})})


def write_run(out: Path, zoo: Results, node: Results, llm: Results | None = None) -> Path:
    """A results directory as `harness matrix` leaves it: zoo tables at the top, the node suite's in onnx-node/, the
    llm suite's (when its job succeeded) in llm/."""
    for results, directory in ((zoo, out), (node, out / "onnx-node"), *([(llm, out / "llm")] if llm else [])):
        directory.mkdir(parents=True, exist_ok=True)
        name, data = document(results)
        (directory / name).write_bytes(data)
        (directory / "results.md").write_text(f"# {results.suite} run of {results.run.finished}\n")
    return out


class Nights:
    """The remote (a bare repository) and the harness commands a nightly workflow runs against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = root / "remote.git"
        subprocess.run(["git", "init", "--quiet", "--bare", str(self.remote)], check=True)
        self.runner = CliRunner()

    def results(self, night: int, **changes) -> Path:
        zoo = run_document("zoo", NIGHTS[night], changes.get("zoo"), changes.get("unavailable", ()))
        node = run_document("onnx-node", NIGHTS[night], changes.get("node"), changes.get("unavailable", ()))
        llm = llm_run(NIGHTS[night], changes.get("llm_regressed", False)) if changes.get("llm") else None
        return write_run(self.root / f"night-{night}", zoo, node, llm)

    def compare(self, results: Path) -> tuple[int, dict[str, str], Path]:
        outputs, body = results / "github-output", results / "issue.md"
        done = self.runner.invoke(main, ["compare-to-published", str(results), "--remote", str(self.remote),
                                         "--link", LINK, "--run-url", "https://ci/run", "--issue-body", str(body)],
                                  env={"GITHUB_OUTPUT": str(outputs)})
        assert done.exception is None or isinstance(done.exception, SystemExit), done.output
        pairs = [line.split("=", 1) for line in outputs.read_text().splitlines()] if outputs.exists() else []
        return done.exit_code, dict(pairs), body

    def publish(self, results: Path, run: str, failed: bool = False) -> int:
        done = self.runner.invoke(main, ["publish", str(results), "--remote", str(self.remote), "--run", run,
                                         "--run-url", f"https://ci/runs/{run}",
                                         "--outcome", "failure" if failed else "success"])
        assert done.exception is None or isinstance(done.exception, SystemExit), done.output
        return done.exit_code

    def show(self, path: str) -> bytes:
        return subprocess.run(["git", "--git-dir", str(self.remote), "show", f"results:{path}"], check=True,
                              capture_output=True).stdout

    def files(self) -> set[str]:
        return set(self.git("ls-tree", "-r", "--name-only", "results").split())

    def commits(self) -> list[str]:
        return self.git("log", "--format=%s", "results").splitlines()

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(self.remote), *args], check=True, capture_output=True,
                              text=True).stdout

    def ordinary(self, night: int) -> Path:
        results = self.results(night)
        assert self.compare(results)[0] in (0, 4)
        assert self.publish(results, str(night + 1)) == 0
        return results


@pytest.fixture
def nights(tmp_path: Path) -> Nights:
    if shutil.which("git") is None:
        pytest.skip("needs git on PATH (apt-get install git)")
    return Nights(tmp_path)


def test_first_night_finds_no_baseline_and_creates_the_branch(nights: Nights) -> None:
    results = nights.results(0)
    code, outputs, body = nights.compare(results)
    assert code == 4 and outputs == {"regression": "false", "baseline": "missing"} and not body.exists()
    assert not (results / "diff.md").exists()
    assert nights.publish(results, "1") == 0
    assert nights.commits() == ["Results of run 1: zoo, onnx-node"]
    assert {"results.json", "results.md", "onnx-node/results.json.gz", "onnx-node/results.md", "index.html",
            ".nojekyll", "published.json", "history/trend.json", "history/trend.md",
            "history/20260101T030000Z-zoo.json", "history/20260101T030000Z-onnx-node.json.gz"} <= nights.files()
    status = json.loads(nights.show("published.json"))
    assert status["latest"]["ok"] and status["suites"]["onnx-node"]["cells"] == 9 * NODE_CASES
    assert 'id="run-failed"' not in nights.show("index.html").decode()


def test_an_ordinary_night_compares_both_suites_and_adds_a_commit(nights: Nights) -> None:
    nights.ordinary(0)
    results = nights.results(1)
    code, outputs, _ = nights.compare(results)
    assert code == 0 and outputs == {"regression": "false", "baseline": "found"}
    assert "No cell changed." in (results / "diff.md").read_text()
    assert "No cell changed." in (results / "onnx-node" / "diff.md").read_text()  # against the .json.gz baseline
    assert nights.publish(results, "2") == 0
    assert nights.commits() == ["Results of run 2: zoo, onnx-node", "Results of run 1: zoo, onnx-node"]
    trend = json.loads(nights.show("history/trend.json"))
    assert [(e["suite"], e["finished"]) for e in trend] == [
        ("zoo", NIGHTS[0]), ("onnx-node", NIGHTS[0]), ("zoo", NIGHTS[1]), ("onnx-node", NIGHTS[1])]
    assert {"history/20260101T030000Z-zoo.json", "history/20260102T030000Z-onnx-node.diff.md"} <= nights.files()
    assert nights.show("results.md").decode() == f"# zoo run of {NIGHTS[1]}\n"


def test_a_regression_gives_an_issue_body_linking_to_the_published_full_diff(nights: Nights) -> None:
    nights.ordinary(0)
    nights.ordinary(1)
    results = nights.results(2, zoo={("pypi-3.6.1", "pypi-3.0.0", "micro-silu"): Verdict.UNSUPPORTED_OP,
                                     ("pypi-3.0.0", "pypi-3.0.0", "decoder"): Verdict.NOT_RUN},
                             node={("src-2.9.4", "pypi-3.6.1", "case_7"): Verdict.CRASH})
    code, outputs, body = nights.compare(results)
    assert code == 3 and outputs == {"regression": "true", "baseline": "found"}
    text = body.read_text()
    assert "**2 cells that passed in the last published run fail in [this run](https://ci/run).**" in text
    assert "micro-silu / fp32 / module: pypi-3.6.1 → pypi-3.0.0 | pass | unsupported-op" in text
    assert "case_7 / fp32 / module: src-2.9.4 → pypi-3.6.1 | pass | crash" in text
    assert "decoder" not in text  # a cell that was not run is no regression
    node_diff = "history/20260103T030000Z-onnx-node.diff.md"
    assert f"[full diff]({LINK}/{node_diff})" in text
    assert nights.publish(results, "3") == 0
    assert "case_7" in nights.show(node_diff).decode()  # the link resolves once published
    assert "micro-silu" in nights.show("history/20260103T030000Z-zoo.diff.md").decode()


def test_a_regression_of_thousands_of_cells_stays_within_the_issue_limit(tmp_path: Path) -> None:
    before = write_run(tmp_path / "before", run_document("zoo", NIGHTS[0]), run_document("onnx-node", NIGHTS[0]))
    everything = {(c, r, f"case_{i}"): Verdict.CRASH for c in TOOLCHAINS for r in TOOLCHAINS for i in range(NODE_CASES)}
    after = write_run(tmp_path / "after", run_document("zoo", NIGHTS[1], {("pypi-3.0.0", "src-2.9.4", "decoder"):
                                                                           Verdict.WRONG_OUTPUT}),
                      run_document("onnx-node", NIGHTS[1], everything))
    comparisons = compare_suites(after, before, 1e-3, LINK)
    text = issue_body(comparisons)
    assert len(text) <= ISSUE_LIMIT and len(text) > ISSUE_LIMIT * 0.8
    assert f"more in the [full diff]({LINK}/history/20260102T030000Z-onnx-node.diff.md)" in text
    assert "decoder / fp32 / module: pypi-3.0.0 → src-2.9.4" in text  # the small suite keeps its share
    assert len(issue_body(comparisons, limit=5000)) <= 5000


def test_a_failed_build_publishes_the_run_with_the_toolchain_unavailable_and_no_regression(nights: Nights) -> None:
    nights.ordinary(0)
    results = nights.results(1, unavailable=("src-2.9.4",))
    code, outputs, _ = nights.compare(results)
    assert code == 0 and outputs["regression"] == "false"  # its cells are gone, not failing
    assert "0 cells added, 10 removed" in (results / "diff.md").read_text()
    assert nights.publish(results, "2") == 0
    page = nights.show("index.html").decode()
    assert "src-2.9.4: build failed: make exited 2" in page and 'id="run-failed"' not in page


def test_a_failed_matrix_republishes_nothing_and_the_page_says_so(nights: Nights) -> None:
    nights.ordinary(0)
    nights.ordinary(1)
    before = {path: nights.show(path) for path in ("results.json", "onnx-node/results.json.gz", "history/trend.json")}
    stale = nights.results(0)  # what a failed job might have lying around: an older run's tables
    assert nights.publish(stale, "3", failed=True) == 0
    assert nights.commits() == ["Run 3 failed: tables unchanged", "Results of run 2: zoo, onnx-node",
                                "Results of run 1: zoo, onnx-node"]
    assert {path: nights.show(path) for path in before} == before
    page = nights.show("index.html").decode()
    assert 'id="run-failed"' in page and "https://ci/runs/3" in page and NIGHTS[1] in page
    status = json.loads(nights.show("published.json"))
    assert [r["ok"] for r in status["runs"]] == [True, True, False] and status["suites"]["zoo"]["run"] == "2"
    assert nights.publish(nights.results(2), "4") == 0
    assert 'id="run-failed"' not in nights.show("index.html").decode()  # the next good night clears the notice


def test_stale_results_are_refused_and_leave_the_branch_alone(nights: Nights) -> None:
    nights.ordinary(0)
    nights.ordinary(1)
    head = nights.git("rev-parse", "results")
    assert nights.publish(nights.results(0), "3") == 2
    assert nights.git("rev-parse", "results") == head


def test_errors_have_their_own_exit_code(nights: Nights, tmp_path: Path) -> None:
    results = nights.results(0)
    missing_remote = nights.runner.invoke(main, ["compare-to-published", str(results), "--remote",
                                                 str(tmp_path / "no-such-repository")])
    assert missing_remote.exit_code == 2 and "git ls-remote failed" in missing_remote.output
    nights.ordinary(0)
    (results / "results.json").write_text("{not json")
    assert nights.compare(results)[0] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert nights.compare(empty)[0] == 2 and nights.publish(empty, "9") == 2


def test_the_llm_suite_is_published_under_llm_and_compared_with_its_own_baseline(nights: Nights) -> None:
    real = read_results(LLM_RUN)
    assert real.suite == "llm"  # compare-to-published refuses a document of another suite in llm/
    results = nights.results(0, llm=True)
    assert nights.compare(results)[0] == 4
    assert nights.publish(results, "1") == 0
    assert nights.commits() == ["Results of run 1: zoo, onnx-node, llm"]
    assert {"llm/results.json.gz", "llm/results.md", "history/20260101T030000Z-llm.json.gz"} <= nights.files()
    status = json.loads(nights.show("published.json"))["suites"]["llm"]
    assert status["cells"] == len(real.cells) and status["passed"] == sum(c.outcome.verdict == "pass"
                                                                           for c in real.cells)
    assert status["files"] == ["llm/results.json.gz", "llm/results.md"]
    results = nights.results(1, llm=True, llm_regressed=True)
    code, outputs, body = nights.compare(results)
    assert code == 3 and outputs == {"regression": "true", "baseline": "found"}
    assert "**1 newly failing**" in (results / "llm" / "diff.md").read_text()  # against llm/, not the zoo's tables
    assert "No cell changed." in (results / "diff.md").read_text()
    text = body.read_text()
    assert f"- llm: 1 newly failing, [full diff]({LINK}/history/20260102T030000Z-llm.diff.md)" in text
    assert "| pass | crash |" in text
    assert nights.publish(results, "2") == 0
    assert "**1 newly failing**" in nights.show("history/20260102T030000Z-llm.diff.md").decode()


def test_a_night_without_the_llm_document_publishes_the_rest_and_keeps_the_llm_tables(nights: Nights) -> None:
    """A failed llm job leaves no llm/ in the run: the zoo and node suite are compared and published as ever."""
    assert nights.publish(nights.results(0, llm=True), "1") == 0
    published = nights.show("llm/results.json.gz")
    results = nights.results(1)
    code, outputs, _ = nights.compare(results)
    assert code == 0 and outputs == {"regression": "false", "baseline": "found"}
    assert nights.publish(results, "2") == 0
    assert nights.commits()[0] == "Results of run 2: zoo, onnx-node"
    assert nights.show("llm/results.json.gz") == published
    status = json.loads(nights.show("published.json"))["suites"]
    assert status["llm"]["run"] == "1" and status["zoo"]["run"] == "2"
