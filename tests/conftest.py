"""Shared fixtures: real MNN toolchains (PyPI wheels in venvs, provisioned by the harness itself)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import PypiSpec
from harness.supervisor import Worker
from harness.toolchains import Toolchain, make_toolchain
from harness.workspace import Workspace, scratch

REPO = Path(__file__).resolve().parent.parent
TEST_VERSIONS = ("3.0.0", "3.2.0", "3.6.1")  # the oldest and newest wheels, and one that folds identities away


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


@pytest.fixture(name="scratch")
def scratch_path() -> Iterator[Path]:
    """A short directory for worker sockets, removed after the test (or swept, if the test process is killed)."""
    with scratch("t") as path:
        yield path


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


@pytest.fixture
def container_toolchain(workspace: Workspace, tmp_path: Path) -> Iterator:
    """A container toolchain from the image tests/test_docker.py builds from PyPI's MNN 3.6.1 wheel, with a Docker
    client; no worker container may be left behind."""
    from harness import containers, sourcebuild
    from harness.config import SourceSpec

    try:
        client = containers.client()
    except containers.DockerUnavailable as error:
        pytest.skip(f"needs a Docker daemon ({error}); .ci/run starts one where it can")
    image = "mnn-matrix/test-toolchain:pypi-3.6.1"
    if not client.images.list(name=image):
        pytest.skip(f"needs the image {image}: tests/test_docker.py builds it (run it first)")
    toolchain = make_toolchain(SourceSpec(id="container-3.6.1", kind="source", version="3.6.1", ref="HEAD"),
                               Workspace(tmp_path, shared_envs=workspace.envs))  # models under tmp_path are seen
    toolchain.provision()
    yield toolchain, client
    left = client.containers.list(all=True, filters={"label": f"{sourcebuild.LABEL}.worker=container-3.6.1"})
    assert not left, "a worker's container is left behind"
