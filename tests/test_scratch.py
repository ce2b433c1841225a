"""Worker scratch directories (sockets and logs, in the system temp folder) do not outlive their run:
the owner removes its own, and the next run sweeps one that a killed process left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.workspace import Workspace, scratch, sweep_scratch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def temp_folder() -> Iterator[Path]:
    """A short private system temp folder for child runs ($TMPDIR), so other runs' directories do not count."""
    with scratch("tmp") as path:
        yield path


def test_a_directory_whose_owner_died_is_swept_and_a_live_owners_is_kept(temp_folder: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = temp_folder / f"mnnm-{int(dead.stdout)}-abc"
    live = temp_folder / f"mnnm-{os.getpid()}-abc"
    legacy = temp_folder / "mnnm-b1234abc"  # not named by pid: its owner cannot be told, so it stays
    for path in (left, live, legacy):
        (path / "w.log").parent.mkdir()
        (path / "w.log").write_text("x")
    assert sweep_scratch(temp_folder) == [left]
    assert not left.exists() and live.exists() and legacy.exists()


def matrix_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "harness", "matrix", "--config", str(config), "--out", str(out), "--jobs", "1",
            "--suite", "zoo", "--no-reproducers", "-q"]


def test_a_killed_run_leaves_no_directory_behind_after_the_next_run(tmp_path: Path, temp_folder: Path,
                                                                    workspace: Workspace, toolchains) -> None:
    config = yaml.safe_load((REPO / "matrix.yaml").read_text())
    config["toolchains"] = [t for t in config["toolchains"] if t["version"] in ("3.0.0", "3.6.1")]
    config["models"] = [{"tag": "micro", "variants": ["fp32"]}]
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "TMPDIR": str(temp_folder), "MNN_MATRIX_HOME": str(tmp_path / "ws"),
           "MNN_MATRIX_ENVS": str(workspace.envs)}
    first = subprocess.Popen(matrix_command(tmp_path / "matrix.yaml", tmp_path / "out"), env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(temp_folder.glob(f"mnnm-{first.pid}-run*")):  # its workers are at work
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert list(temp_folder.glob(f"mnnm-{first.pid}-*")), "a killed run cannot clean up after itself"

    second = subprocess.run(matrix_command(tmp_path / "matrix.yaml", tmp_path / "out"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "out" / "results.json").exists()
    assert not list(temp_folder.glob("mnnm-*")), "the next run swept the killed one's directory and removed its own"
