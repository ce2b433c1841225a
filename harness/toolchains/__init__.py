"""Toolchains: an MNN version the harness can convert and run with, one module per kind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from harness.config import ToolchainSpec
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


def make_toolchain(spec: ToolchainSpec, workspace: Workspace) -> Toolchain:
    from harness.toolchains.pypi import PypiToolchain
    from harness.toolchains.source import SourceToolchain

    kinds: dict[str, type[Toolchain]] = {"pypi": PypiToolchain, "source": SourceToolchain}
    return kinds[spec.kind](spec, workspace)
