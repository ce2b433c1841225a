"""Run-to-run diff on two real runs that differ: a changed tolerance, an added toolchain, flipped cells."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.diff import changes
from harness.history import keep
from harness.matrix import run_matrix
from harness.progress import Progress
from harness.records import Verdict
from harness.report import read_results, write_results
from harness.selection import Selection
from harness.workspace import Workspace

BEFORE = {
    "toolchains": [{"id": "old", "kind": "pypi", "version": "3.0.0"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
                 {"id": "fp16", "flags": ["--fp16"], "tolerance": {"max_abs_ratio": 1e-9}}],
    "models": [{"name": "micro-conv", "variants": ["fp32", "fp16"]}, {"name": "micro-silu", "variants": ["fp32"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}
AFTER = copy.deepcopy(BEFORE)
AFTER["toolchains"].append({"id": "new", "kind": "pypi", "version": "3.6.1"})  # an added toolchain
AFTER["variants"][0]["tolerance"] = {"max_abs_ratio": 1e-12}  # fp32 tightened: conv now fails
AFTER["variants"][1]["tolerance"] = {"max_abs_ratio": 0.01}  # fp16 loosened: conv now passes


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diff")
    paths = {}
    for name, config in (("before", BEFORE), ("after", AFTER)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
        results = run_matrix(root / f"{name}.yaml", Selection(), Workspace(root / name, shared_envs=workspace.envs),
                             jobs=2, fresh=True, progress=Progress(quiet=True))
        write_results(results, root / name / "out")
        keep(results, root / "results")
        paths[name] = root / name / "out" / "results.json"
    return paths


def test_changes_are_found_with_their_causes(runs) -> None:
    diff = changes(read_results(str(runs["before"])), read_results(str(runs["after"])))
    failing = {(c.identity[2], c.identity[3]) for c in diff.of_kind("newly-failing")}
    passing = {(c.identity[2], c.identity[3]) for c in diff.of_kind("newly-passing")}
    assert ("micro-conv", "fp32") in failing and ("micro-conv", "fp16") in passing
    flipped = diff.of_kind("newly-failing") + diff.of_kind("newly-passing")
    assert all("the tolerance changed" in c.causes for c in flipped)
    assert diff.toolchains_added == ["new"] and not diff.toolchains_rebuilt
    assert diff.added == 3 * 2 * 3  # three new pairings x two APIs x three conversions
    assert diff.regressions and all(c.before == "pass" for c in diff.regressions)


def test_a_rebuilt_toolchain_is_named_as_the_cause(runs) -> None:
    """A real run, and the same run as if its toolchain had been rebuilt and one cell had crashed."""
    before = read_results(str(runs["before"]))
    rebuilt = before.model_copy(update={"toolchains": [
        t.model_copy(update={"provenance": {**t.provenance, "sha": "0" * 40}}) for t in before.toolchains]})
    broken_cell = before.cells[0].model_copy(update={"outcome": before.cells[0].outcome.model_copy(
        update={"verdict": Verdict.CRASH, "reason": "worker died: SIGSEGV (signal 11)"})})
    after = rebuilt.model_copy(update={"cells": [broken_cell, *before.cells[1:]]})
    diff = changes(before, after)
    [change] = diff.changes
    assert change.kind == "newly-failing" and change.causes == ("old was rebuilt",)
    assert diff.toolchains_rebuilt == ["old"]


def test_the_command_line_writes_a_summary_and_fails_on_regression(runs, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    command = [sys.executable, "-m", "harness", "report", str(runs["after"]), "--baseline", str(runs["before"])]
    done = subprocess.run([*command, "--fail-on-regression"], capture_output=True, text=True,
                          env={"GITHUB_STEP_SUMMARY": str(summary), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "cells that passed in the baseline fail now" in done.stderr
    assert "newly failing" in done.stdout and "the tolerance changed" in done.stdout
    assert summary.read_text() == (runs["after"].parent / "diff.md").read_text()
    same = subprocess.run([sys.executable, "-m", "harness", "report", str(runs["before"]), "--baseline",
                           str(runs["before"]), "--fail-on-regression"], capture_output=True, text=True)
    assert same.returncode == 0 and "No cell changed." in same.stdout


def test_history_keeps_each_run_and_a_trend(runs) -> None:
    history = runs["before"].parent.parent.parent / "results" / "history"
    index = json.loads((history / "trend.json").read_text())
    assert [len(e["pairs"]) for e in index] == [1, 4]
    assert all((history / e["file"]).exists() for e in index)
    assert "old → new" in (history / "trend.md").read_text()
    assert read_results(str(history / index[0]["file"])).suite == "zoo"
