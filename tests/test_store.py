"""Content-addressed reuse: a rerun with nothing changed does no MNN work and gives the fresh run's document, a
run of the same plan into the same place writes nothing, and identical converted models run once per runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.matrix import run_matrix, run_suite
from harness.progress import Progress
from harness.records import Results
from harness.report import document, read_results
from harness.selection import Selection
from harness.suites import ZOO
from harness.workspace import Workspace

CONFIG = {
    "toolchains": [{"id": "pypi-3.0.0", "kind": "pypi", "version": "3.0.0"},
                   {"id": "pypi-3.6.0", "kind": "pypi", "version": "3.6.0"},
                   {"id": "pypi-3.6.1", "kind": "pypi", "version": "3.6.1"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
                 {"id": "wq8", "flags": ["--weightQuantBits", "8"], "memory": ["normal", "low"],
                  "tolerance": {"max_abs_ratio": 0.05}}],
    "models": [{"name": "micro-silu", "variants": ["fp32"]}, {"name": "micro-conv", "variants": ["wq8", "fp32"]},
               {"name": "micro-gelu-erf", "variants": ["fp32"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}
BOOKKEEPING = {"key", "wall_s", "load_s", "run_s", "convert_s", "quantize_s", "reused_from"}


def _what(results: Results) -> dict:
    """The document without timings and reuse records."""
    return {"conversions": [c.model_dump(exclude=BOOKKEEPING) for c in results.conversions],
            "cells": [c.model_dump(exclude=BOOKKEEPING) for c in results.cells],
            "op_support": results.op_support, "models": results.models, "toolchains": results.toolchains}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains) -> dict:
    root = tmp_path_factory.mktemp("store")
    (root / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))
    space = Workspace(root / "ws", shared_envs=workspace.envs)

    def run(fresh: bool, target: Path | None = None) -> tuple[Results | None, Progress]:
        progress = Progress(quiet=True)
        return run_matrix(root / "matrix.yaml", Selection(), space, jobs=2, fresh=fresh, progress=progress,
                          target=target), progress

    made = {"fresh": run(True), "rerun": run(False), "root": root, "run": run, "space": space}
    return made


def test_a_rerun_does_no_mnn_work_and_gives_the_fresh_runs_document(runs: dict) -> None:
    (fresh, _), (rerun, progress) = runs["fresh"], runs["rerun"]
    assert _what(rerun) == _what(fresh)
    assert rerun.run.plan == fresh.run.plan and rerun.run.resumed_cells == len(rerun.cells)
    assert all(c.reused_from for c in rerun.cells), "every cell says whose run it is"
    assert progress.durations["convert"] < 1 and progress.durations["run"] < 1


def test_identical_converted_models_run_once_per_runtime(runs: dict) -> None:
    fresh, _ = runs["fresh"]
    digest = {(c.converter, c.model, c.variant): c.model_digest for c in fresh.conversions}
    shared = [c for c in fresh.cells if c.reused_from]
    assert shared, "3.6.0 and 3.6.1 write the same bytes for these models (uuid and version stamp aside)"
    by_pair = {(c.converter, c.runtime, c.model, c.variant, c.api, c.memory): c for c in fresh.cells}
    for cell in shared:
        origin = by_pair[cell.reused_from, cell.runtime, cell.model, cell.variant, cell.api, cell.memory]
        assert not origin.reused_from and origin.outputs == cell.outputs and origin.outcome == cell.outcome
        assert digest[cell.converter, cell.model, cell.variant] == digest[origin.converter, cell.model, cell.variant]
    assert fresh.run.resumed_cells == len(shared)


def test_the_same_plan_into_the_same_place_writes_nothing_and_fresh_ignores_the_store(runs: dict) -> None:
    root, run = runs["root"], runs["run"]
    fresh, _ = runs["fresh"]
    target = root / "out"
    results, written = run_suite(root / "matrix.yaml", Selection(), runs["space"], 2, False, Progress(quiet=True),
                                 ZOO, target)
    assert results is not None and written
    again, _ = run(False, target)
    assert again is None, "nothing changed: the documents stand"
    (target / "results.md").write_text("edited")
    assert run(False, target)[0] is not None, "a document that changed is written again"
    again, progress = run(True, target)
    assert again is not None and again.run.resumed_cells < len(again.cells)
    assert progress.durations["run"] > 0 and _what(again) == _what(fresh)
    assert document(read_results(written[0]))[0] == written[0].name
