"""Sharded runs: `matrix --shard I/N` runs a stable subset of the cells, and `harness merge` joins the shards into
the document the unsharded run gives, cell for cell (timings aside)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.matrix import run_matrix
from harness.merge import MergeError, merge
from harness.progress import Progress
from harness.records import Results
from harness.report import read_results, write_results
from harness.selection import Selection
from harness.workspace import Workspace

CONFIG = {
    "toolchains": [{"id": "pypi-3.0.0", "kind": "pypi", "version": "3.0.0"},
                   {"id": "pypi-3.6.1", "kind": "pypi", "version": "3.6.1"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
                 {"id": "wq8", "flags": ["--weightQuantBits", "8"], "memory": ["normal", "low"],
                  "tolerance": {"max_abs_ratio": 0.05}}],
    "models": [{"name": "micro-silu", "variants": ["fp32"]}, {"name": "micro-conv", "variants": ["wq8", "fp32"]},
               {"name": "micro-shape-start-end", "variants": ["fp32"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}
TIMINGS = {"key", "wall_s", "load_s", "run_s", "convert_s", "quantize_s", "reused_from"}  # and reuse records


def _what(results: Results) -> tuple[list, list]:
    """Every conversion and cell as a run decides it, in the document's order, without timings."""
    return ([c.model_dump(exclude=TIMINGS) for c in results.conversions],
            [c.model_dump(exclude=TIMINGS) for c in results.cells])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains) -> dict:
    root = tmp_path_factory.mktemp("shards")
    (root / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))

    def run(name: str, shard: tuple[int, ...] = ()) -> Results:
        return run_matrix(root / "matrix.yaml", Selection(shard=shard),
                          Workspace(root / name, shared_envs=workspace.envs), jobs=2, fresh=True,
                          progress=Progress(quiet=True))

    made = {"whole": run("whole")}
    for index in (1, 2, 3):
        made[index] = run(f"shard{index}", (index, 3))
        write_results(made[index], root / f"out{index}")
    made["root"] = root
    return made


def test_the_shards_hold_every_cell_exactly_once(runs: dict) -> None:
    shards = [runs[index].cells for index in (1, 2, 3)]
    assert all(shards), "three shards of 48 cells, each with some"
    assert sum(map(len, shards)) == len(runs["whole"].cells)


def test_merged_shards_equal_the_unsharded_run_cell_for_cell(runs: dict) -> None:
    merged = merge([runs[index] for index in (3, 1, 2)])  # in any order
    assert _what(merged) == _what(runs["whole"])
    assert "shard" not in merged.run.selection and merged.run.selection == runs["whole"].run.selection


def test_the_command_line_merges_documents_and_refuses_documents_of_other_runs(runs: dict, tmp_path: Path) -> None:
    root = runs["root"]
    documents = [str(next((root / f"out{index}").glob("results.json*"))) for index in (1, 2, 3)]
    done = subprocess.run([sys.executable, "-m", "harness", "merge", *documents, "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _what(read_results(str(next(tmp_path.glob("results.json*"))))) == _what(runs["whole"])
    other = runs[1].model_copy(update={"suite": "onnx-node"})
    with pytest.raises(MergeError, match="suite"):
        merge([runs[2], other])
    with pytest.raises(MergeError, match=r"each of 1\.\.3 is needed once"):
        merge([runs[1], runs[2]])
    with pytest.raises(MergeError, match=r"each of 1\.\.3 is needed once"):
        merge([runs[1], runs[2], runs[2]])
    with pytest.raises(MergeError, match="not the shards of one run"):  # an unsharded document is no shard
        merge([runs[1], runs[2], runs["whole"]])
