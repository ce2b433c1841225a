"""Toolchains: an MNN version the harness can convert and run with, one module per kind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TextIO

from harness.config import ToolchainSpec
from harness.judge import tail
from harness.supervisor import Process
from harness.workspace import Workspace


class ProvisionError(Exception):
    """A toolchain could not be made ready; the message says why, `log_tail` shows the evidence."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.log_tail = reason, log_tail


class Toolchain(ABC):
    """One MNN version: provisions its environment, then launches workers in it."""

    def __init__(self, spec: ToolchainSpec, workspace: Workspace) -> None:
        self.spec, self.workspace = spec, workspace

    @property
    def id(self) -> str:
        return self.spec.id

    @abstractmethod
    def provision(self) -> dict:
        """Make the environment ready (cached between runs); return provenance. Raises ProvisionError."""

    @abstractmethod
    def launch(self, socket_path: Path, log_path: Path) -> Process:
        """Start `worker.py` in this toolchain's environment, connecting to `socket_path`."""

    @abstractmethod
    def python_command(self, cwd: Path) -> list[str]:
        """The argv that runs this toolchain's Python (after `provision`) in `cwd`, seeing the workspace at its own
        path: what an external tool (MNN's LLM exporter) calls the toolchain's converter with."""


def run_step(argv: list[str], log: TextIO, failure: str, error: type[ProvisionError] = ProvisionError) -> str:
    """One step of making an environment, logged; `error` (saying `failure` and the output's error line) if it
    fails. Returns its standard output."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log.write(done.stdout + done.stderr)
    log.flush()
    if done.returncode != 0:
        output = done.stdout + done.stderr
        reason = next((line.strip() for line in reversed(output.splitlines())
                       if line.startswith("ERROR") or "Error" in line), f"exit code {done.returncode}")
        raise error(f"{failure}: {reason}", tail(output))
    return done.stdout


PIP_INSTALL = ("-m", "pip", "install", "--disable-pip-version-check", "--retries", "2", "--timeout", "60")


def make_venv(directory: Path, installs: list[tuple[list[str], str]], probe: str, unimportable: str,
              error: type[ProvisionError] = ProvisionError) -> dict:
    """A fresh venv at `directory`, logged beside it: each of `installs` (pip's arguments, what its failure says),
    then `probe`, Python that prints "PROBE <json>"; returns that json. Raises `error`."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    python = str(directory / "bin" / "python")
    with directory.with_suffix(".log").open("w") as log:
        run_step([sys.executable, "-m", "venv", str(directory)], log, "could not create a venv", error)
        for arguments, failure in installs:
            run_step([python, *PIP_INSTALL, *arguments], log, failure, error)
        output = run_step([python, "-I", "-c", probe], log, unimportable, error)
    return json.loads(next(line[6:] for line in output.splitlines() if line.startswith("PROBE ")))


def make_toolchain(spec: ToolchainSpec, workspace: Workspace) -> Toolchain:
    from harness.toolchains.pypi import PypiToolchain
    from harness.toolchains.source import SourceToolchain

    kinds: dict[str, type[Toolchain]] = {"pypi": PypiToolchain, "source": SourceToolchain}
    return kinds[spec.kind](spec, workspace)
