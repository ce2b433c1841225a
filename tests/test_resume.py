"""An interrupted run loses at most the cells in flight (and the store's last second); running again resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import stored_runs

import models
from harness.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent


def matrix_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "harness", "matrix", "--config", str(config), "--out", str(out), "--jobs", "1",
            "--suite", "zoo"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path, workspace: Workspace, toolchains,
                                                     stop: signal.Signals) -> None:
    config = yaml.safe_load((REPO / "matrix.yaml").read_text())
    config["toolchains"] = [t for t in config["toolchains"] if t["version"] in ("3.0.0", "3.6.1")]
    config["models"] = [{"tag": "micro", "variants": ["fp32", "fp16"]}]
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "MNN_MATRIX_HOME": str(tmp_path / "ws"), "MNN_MATRIX_ENVS": str(workspace.envs)}
    store = tmp_path / "ws" / "store" / "store.sqlite"
    first = subprocess.Popen(matrix_command(tmp_path / "matrix.yaml", tmp_path / "out"), env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # a shell's `&` makes children ignore SIGINT: Ctrl-C must reach this one
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while len(stored_runs(store)) < 60:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(stop)
    _, err = first.communicate(timeout=60)
    if stop == signal.SIGINT:
        assert first.returncode == 130 and "run the same command again to resume" in err and "Traceback" not in err
    kept = stored_runs(store)
    assert not (tmp_path / "out" / "results.json").exists()

    second = subprocess.run(matrix_command(tmp_path / "matrix.yaml", tmp_path / "out"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "found in the store" in second.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    planned = sum("micro" in spec.tags for spec in models.ZOO.values()) * 2 * 2  # x fp32/fp16 x two converters
    assert len(results["conversions"]) == planned and len(results["cells"]) == planned * 2 * 2
    assert stored_runs(store).items() >= kept.items(), "what the first run stored is kept, and not made again"
    by_key = {cell["key"]: cell for cell in results["cells"]}
    for record in kept.values():  # each stored run is the record of the cell that made it, reused as it was
        cell = by_key[record["key"]]
        assert {**cell, "reused_from": "", "outcome": {}} == {**record, "reused_from": "", "outcome": {}}
        unstable = cell["outcome"]["reason"].startswith("the tool under test wrote a different model")
        assert cell["outcome"] == record["outcome"] or unstable  # a conversion's instability qualifies its runs
        assert cell["reused_from"].startswith(record["converter"] + ", ")
    assert results["run"]["resumed_cells"] >= len(kept)

