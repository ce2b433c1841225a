"""A whole matrix run on real toolchains: cells, crash isolation, unavailable toolchains, results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import avgpool_without_strides

from harness.matrix import run_matrix
from harness.merge import in_order
from harness.progress import Progress
from harness.records import Results, Verdict
from harness.report import COMPACT_ABOVE, read_results, write_results
from harness.selection import Selection
from harness.workspace import Workspace

CONFIG = {
    "toolchains": [{"id": "old", "kind": "pypi", "version": "3.0.0"},
                   {"id": "new", "kind": "pypi", "version": "3.6.1"},
                   {"id": "missing", "kind": "pypi", "version": "9.9.9"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"atol": 1e-4, "rtol": 1e-3}},
                 {"id": "fp16", "flags": ["--fp16"], "tolerance": {"max_abs_ratio": 0.01}}],
    "models": [{"name": "micro-silu", "variants": ["fp32"]}, {"name": "micro-conv", "variants": ["fp32", "fp16"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 3},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains) -> tuple[Results, Path]:
    """One real run: two toolchains, one that cannot be installed, two zoo models and a model that crashes MNN."""
    root = tmp_path_factory.mktemp("run")
    config = root / "matrix.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    crash = avgpool_without_strides(root / "crash.onnx")
    selection = Selection(models=("micro-silu", "micro-conv", str(crash)))
    results = run_matrix(config, selection, Workspace(root / "ws", shared_envs=workspace.envs), jobs=2, fresh=True,
                         progress=Progress(quiet=True))
    write_results(results, root / "out")
    return results, root / "out"


def cells(results: Results, **match: str) -> list:
    return [c for c in results.cells if all(getattr(c, k) == v for k, v in match.items())]


def test_every_pairing_gets_a_cell_for_every_model_variant_and_api(run) -> None:
    results, _ = run
    # (silu: 1 variant + conv: 2 + crash: 2) x 2 converters x 2 runtimes x 2 APIs
    assert len(results.cells) == 5 * 2 * 2 * 2
    assert len(results.conversions) == 5 * 2
    assert len({c.key for c in results.cells}) == len(results.cells)


def test_a_model_that_kills_mnn_is_a_crash_cell_and_the_rest_of_the_run_is_intact(run) -> None:
    results, _ = run
    crashed = cells(results, model="crash")
    assert crashed and all(c.outcome.verdict == Verdict.CRASH for c in crashed)
    assert all("SIGFPE" in c.outcome.reason and c.outcome.stage == "run" for c in crashed)
    conv = cells(results, model="micro-conv")
    assert len(conv) == 16 and all(c.outcome.verdict == Verdict.PASS for c in conv), [c.outcome for c in conv]


def test_the_field_failure_shows_up_where_it_should(run) -> None:
    results, _ = run
    silu = {(c.converter, c.runtime): c.outcome.verdict for c in cells(results, model="micro-silu", api="module")}
    assert silu == {("old", "old"): Verdict.PASS, ("old", "new"): Verdict.PASS,
                    ("new", "old"): Verdict.UNSUPPORTED_OP, ("new", "new"): Verdict.PASS}


def test_a_toolchain_that_cannot_be_installed_is_a_row_that_says_why(run) -> None:
    results, out = run
    [missing] = [t for t in results.toolchains if t.id == "missing"]
    assert missing.status == "unavailable" and "MNN==9.9.9" in missing.reason
    assert not cells(results, converter="missing") and not cells(results, runtime="missing")
    assert "**missing** (pypi 9.9.9)" in (out / "results.md").read_text()


def test_passing_cells_carry_deltas_and_timings(run) -> None:
    results, _ = run
    for cell in cells(results, model="micro-conv"):
        [delta] = cell.outputs
        assert delta.max_abs is not None and delta.cosine > 0.9999 and delta.mnn_rule_pass
        assert cell.repeats_agree and len(cell.run_s) == 3 and cell.load_s is not None


def test_results_json_matches_the_published_schema(run) -> None:
    _, out = run
    schema = json.loads(subprocess.run([sys.executable, "-m", "harness", "schema"], capture_output=True,
                                       text=True, check=True).stdout)
    document = json.loads((out / "results.json").read_text())
    jsonschema.validate(document, schema)
    assert document["schema_version"] == 1
    assert {"onnxruntime", "python", "cores"} <= set(document["host"])
    assert all(len(m["sha256"]) == 64 for m in document["models"])


def test_every_grid_count_in_the_markdown_is_a_count_of_json_cells(run) -> None:
    results, out = run
    markdown = (out / "results.md").read_text()
    for converter in ("old", "new"):
        row = next(line for line in markdown.splitlines() if line.startswith(f"| **{converter}** |"))
        shown = re.findall(r"(\d+)/(\d+)", row)
        for (passed, total), runtime in zip(shown, ("old", "new"), strict=False):
            pair = cells(results, converter=converter, runtime=runtime)
            assert (int(passed), int(total)) == (sum(c.outcome.verdict == Verdict.PASS for c in pair), len(pair))
    counts = Counter(c.outcome.verdict for c in results.cells)
    for verdict, count in counts.items():
        assert re.search(rf"`{verdict.value}` \| {count} \|", markdown)


def test_a_large_run_is_written_compact_and_reads_back_with_the_same_verdicts(run, tmp_path: Path) -> None:
    results, _ = run
    copies = COMPACT_ABOVE // len(results.cells) + 1
    large = results.model_copy(update={"cells": [cell.model_copy(update={"model": f"{cell.model}-{i}"})
                                                 for i in range(copies) for cell in results.cells]})
    written = {path.name for path in write_results(large, tmp_path)}
    assert written == {"results.json.gz", "results.md", "results.html"}
    back = read_results(tmp_path / "results.json.gz")
    assert [c.outcome for c in back.cells] == [c.outcome for c in in_order(large).cells]  # in canonical order
    assert all(c.key == "" and c.run_s == [] for c in back.cells), "per-cell bookkeeping is left out"
    assert back.run.phases == large.run.phases


def test_each_toolchain_says_what_it_can_do(run) -> None:
    results, _ = run
    capabilities = {t.version: set(t.capabilities) for t in results.toolchains if t.status == "ok"}
    assert capabilities["3.0.0"] == {"convert", "quantize", "run"}  # no MNN.llm in the 3.0.0 wheel
    assert capabilities["3.6.1"] == {"convert", "quantize", "run", "llm"}
