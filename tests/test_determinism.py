"""The same commit gives the same table: two identical runs of a small matrix agree cell for cell, including
models whose tools under test are themselves unstable (they are nondeterministic both times, never by luck).

A tool that crashes at random (3.0.0's ADMM quantization of mobilenet-tiny crashed in some runs and not in
others) can still flip between crash, nondeterministic and pass: its two attempts are a sample, not a proof;
it is left out here so that this test cannot flake."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.matrix import run_matrix
from harness.progress import Progress
from harness.records import Verdict
from harness.selection import Selection
from harness.workspace import Workspace

CONFIG = {
    "toolchains": [{"id": "pypi-3.0.0", "kind": "pypi", "version": "3.0.0"},
                   {"id": "pypi-3.6.1", "kind": "pypi", "version": "3.6.1"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001, "min_cosine": 0.99999}},
                 {"id": "ptq-ema", "quantize": {"feature": "EMA", "weight": "MAX_ABS", "samples": 8},
                  "tolerance": {"min_cosine": 0.99, "max_rel_l2": 0.15}},
                 {"id": "ptq-kl", "quantize": {"feature": "KL", "weight": "MAX_ABS", "samples": 8},
                  "tolerance": {"min_cosine": 0.99, "max_rel_l2": 0.15}}],
    "models": [{"name": "micro-constant-of-shape-default", "variants": ["fp32"]},
               {"name": "micro-silu", "variants": ["fp32"]},
               {"name": "seq-gru", "variants": ["ptq-ema"]},
               {"name": "mobilenet-tiny", "variants": ["ptq-kl"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 3},
}


def test_two_identical_runs_give_identical_verdicts(workspace: Workspace, toolchains, tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))
    runs = [run_matrix(tmp_path / "matrix.yaml", Selection(),
                       Workspace(tmp_path / f"ws{i}", shared_envs=workspace.envs), jobs=2, fresh=True,
                       progress=Progress(quiet=True)) for i in range(2)]
    verdicts = [{(c.converter, c.runtime, c.model, c.variant, c.api): (c.outcome.verdict, c.outcome.stage)
                 for c in run.cells} for run in runs]
    assert len(verdicts[0]) == 2 * 2 * 4 * 2
    assert verdicts[0] == verdicts[1], {k: (v, verdicts[1][k]) for k, v in verdicts[0].items() if verdicts[1][k] != v}
    # the converter's uninitialized constant is caught in every cell of both runs, not only when the heap is dirty
    assert {v for k, v in verdicts[0].items() if k[2] == "micro-constant-of-shape-default"} == {
        (Verdict.NONDETERMINISTIC, "convert")}
