"""Shared fixtures: real MNN toolchains (PyPI wheels in venvs, provisioned by the harness itself)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import PypiToolchain as PypiSpec
from harness.toolchains import Toolchain, make_toolchain
from harness.workers import Worker
from harness.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
TEST_VERSIONS = ("3.0.0", "3.6.1")  # the oldest and newest wheels


@pytest.fixture(scope="session")
def workspace() -> Workspace:
    """The harness workspace; toolchain venvs are shared with `nox -s matrix` runs to save time."""
    return Workspace(Path(os.environ.get("MNN_MATRIX_HOME", REPO / ".mnn-matrix")).absolute())


@pytest.fixture(scope="session")
def toolchains(workspace: Workspace) -> dict[str, Toolchain]:
    """Real MNN 3.0.0 and 3.6.1 from PyPI, keyed by version."""
    made = {}
    for version in TEST_VERSIONS:
        toolchain = make_toolchain(PypiSpec(id=f"pypi-{version}", kind="pypi", version=version), workspace)
        toolchain.provision()
        made[version] = toolchain
    return made


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short directory for worker sockets."""
    with tempfile.TemporaryDirectory(prefix="mnnm-t") as path:
        yield Path(path)


@pytest.fixture
def worker_for(toolchains: dict[str, Toolchain], scratch: Path) -> Iterator:
    """Workers on real toolchains, closed after the test."""
    started: list[Worker] = []

    def make(version: str) -> Worker:
        worker = Worker(toolchains[version], scratch, f"w{len(started)}")
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.close()
