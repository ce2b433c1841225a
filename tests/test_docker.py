"""Source toolchains in Docker, for real: a container toolchain holding a PyPI MNN wheel runs cells
through the same protocol as a venv worker; build caching; failures and a missing daemon explained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import containers, protocol, sourcebuild
from harness.config import SourceSpec
from harness.matrix import run_matrix
from harness.progress import Progress
from harness.records import Verdict
from harness.selection import Selection
from harness.sources import REPO_VARIABLE, Source
from harness.supervisor import Worker
from harness.toolchains import make_toolchain
from harness.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
TOOLCHAIN = "container-3.6.1"


@pytest.fixture(scope="module")
def docker_client():
    try:
        return containers.client()
    except containers.DockerUnavailable as error:
        pytest.skip(f"needs a Docker daemon ({error}); .ci/run starts one where it can")


@pytest.fixture(scope="module")
def base_image(docker_client) -> str:
    """The base image source toolchains build on: pulled, or made offline with debootstrap."""
    try:
        return sourcebuild.ensure_base(docker_client, sourcebuild.PINNED_BASE, print)
    except sourcebuild.BuildError as error:
        pytest.skip(f"cannot make a base image ({error}): as root, `apt-get install debootstrap` (.ci/run does), "
                    f"or give the Docker daemon registry access to pull {sourcebuild.PINNED_BASE}")


@pytest.fixture(scope="module")
def wheel_image(docker_client, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A toolchain image made by the harness's own runtime recipe, from PyPI's MNN 3.6.1 wheel."""
    tag = "mnn-matrix/test-toolchain:pypi-3.6.1"
    if not docker_client.images.list(name=tag):
        context = tmp_path_factory.mktemp("wheel")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "-d", str(context), "MNN==3.6.1"], check=True)
        (context / "MNNConvert").write_text("#!/bin/sh\necho 'the wheel has no MNNConvert binary'\n")
        sourcebuild.build_image(docker_client, "runtime.Dockerfile", [*context.glob("*.whl"), context / "MNNConvert"],
                                tag, {"BASE": base_image}, {f"{sourcebuild.LABEL}.toolchain": TOOLCHAIN,
                                                      f"{sourcebuild.LABEL}.sha": "pypi-wheel-3.6.1"}, print)
    return tag


CONFIG = {
    "toolchains": [{"id": "pypi-3.0.0", "kind": "pypi", "version": "3.0.0"},
                   {"id": TOOLCHAIN, "kind": "source", "version": "latest", "ref": "HEAD"}],  # whatever it reports
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}}],
    "models": [{"name": "micro-silu", "variants": ["fp32"]}, {"name": "micro-conv", "variants": ["fp32"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}


def test_container_and_venv_toolchains_mix_in_one_matrix(wheel_image, workspace: Workspace, toolchains,
                                                          tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))
    results = run_matrix(tmp_path / "matrix.yaml", Selection(), Workspace(tmp_path / "ws", shared_envs=workspace.envs),
                         jobs=2, fresh=True, progress=Progress(quiet=True))
    [container] = [t for t in results.toolchains if t.id == TOOLCHAIN]
    assert container.status == "ok" and container.provenance["image"] == wheel_image
    assert container.provenance["sha"] == "pypi-wheel-3.6.1" and container.provenance["mnn_version"] == "3.6.1"
    verdicts = {(c.converter, c.runtime, c.model, c.api): c.outcome.verdict for c in results.cells}
    assert len(verdicts) == 2 * 2 * 2 * 2
    # the field report, across the container boundary: 3.6.1's SiLU does not run on 3.0.0
    assert verdicts[TOOLCHAIN, "pypi-3.0.0", "micro-silu", "module"] == Verdict.UNSUPPORTED_OP
    assert verdicts["pypi-3.0.0", TOOLCHAIN, "micro-silu", "module"] == Verdict.PASS
    assert all(v == Verdict.PASS for (conv, run, model, _), v in verdicts.items() if model == "micro-conv")


def test_a_container_worker_has_no_network_and_a_read_only_worker(wheel_image, docker_client, workspace: Workspace,
                                                                 scratch: Path) -> None:
    spec = SourceSpec(id=TOOLCHAIN, kind="source", version="3.6.1", ref="HEAD")
    toolchain = make_toolchain(spec, workspace)
    toolchain.provision()
    worker = Worker(toolchain, scratch, "net")
    try:
        assert worker.start()["mnn_version"] == "3.6.1"
        [container] = docker_client.containers.list(filters={"label": f"{sourcebuild.LABEL}.worker={TOOLCHAIN}"})
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert mounts["/opt/mnn-matrix/worker.py"]["RW"] is False
        assert mounts[str(workspace.root)]["RW"] is True
    finally:
        worker.close()


def test_a_crash_in_a_container_is_reported_with_its_signal(wheel_image, workspace: Workspace, scratch: Path,
                                                            tmp_path: Path) -> None:
    from helpers import avgpool_without_strides, run_request

    from harness.supervisor import WorkerLost

    space = Workspace(tmp_path, shared_envs=workspace.envs)
    toolchain = make_toolchain(SourceSpec(id=TOOLCHAIN, kind="source", version="3.6.1", ref="HEAD"), space)
    toolchain.provision()
    worker = Worker(toolchain, scratch, "crash")
    try:
        model = tmp_path / "pool.mnn"
        worker.request(protocol.convert_request(avgpool_without_strides(tmp_path / "pool.onnx"), model))
        import numpy as np

        x = np.ones((1, 3, 32, 32), np.float32)
        with pytest.raises(WorkerLost, match="SIGFPE"):
            worker.request(run_request(model, {"x": x}, ["y"]), {"x": x})
    finally:
        worker.close()


@pytest.fixture
def mnn_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway git repository standing in for MNN's, for what a build does before compiling (no mirror in
    $MNN_MATRIX_MNN_REPO may stand in for it)."""
    monkeypatch.delenv(REPO_VARIABLE, raising=False)
    repo = tmp_path / "mnn"
    (repo / "include" / "MNN").mkdir(parents=True)
    (repo / "include" / "MNN" / "MNNDefine.h").write_text(
        "#define MNN_VERSION_MAJOR 3\n#define MNN_VERSION_MINOR 6\n#define MNN_VERSION_PATCH 1\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    return repo


def test_a_second_build_of_the_same_commit_and_recipe_is_a_cache_hit(wheel_image, base_image: str, docker_client,
                                                                      mnn_repo: Path, tmp_path: Path) -> None:
    spec = SourceSpec(id="cached", kind="source", version="3.6.1", repository=str(mnn_repo), ref="HEAD")
    sha = Source(str(mnn_repo), "HEAD").resolve()
    digest = sourcebuild.recipe(docker_client.images.get(base_image).id)
    tag = f"mnn-matrix/cached:{sha[:12]}-{digest[:8]}"
    docker_client.images.get(wheel_image).tag(tag)  # as if this commit had been built with this recipe
    try:
        space = Workspace(tmp_path / "ws")
        record = sourcebuild.build(spec, space, print)
        assert record.status == "cached" and record.image == tag and record.mnn_version == "3.6.1"
        assert record.seconds < 60
        log = sourcebuild.build_dir(space, "cached") / "build.log"
        log.write_text("the full log of the build that made this image\n")
        again = sourcebuild.build(spec, space, print)
        assert again.status == "cached" and "the full log" in log.read_text(), "a cache hit keeps the build's log"
        assert sourcebuild.read_record(space, "cached").image == tag
    finally:
        docker_client.images.remove(tag)


def test_the_recipe_changes_with_the_build_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sourcebuild.recipe("sha256:base")
    assert sourcebuild.recipe("sha256:base") == before and sourcebuild.recipe("sha256:other") != before
    assets = tmp_path / "docker"
    assets.mkdir()
    for name in ("builder.Dockerfile", "build-mnn.sh", "runtime.Dockerfile"):
        (assets / name).write_text((sourcebuild.ASSETS / name).read_text())
    monkeypatch.setattr(sourcebuild, "ASSETS", assets)
    assert sourcebuild.recipe("sha256:base") == before
    (assets / "build-mnn.sh").write_text((assets / "build-mnn.sh").read_text() + "# changed\n")
    assert sourcebuild.recipe("sha256:base") != before


def test_a_build_that_fails_becomes_the_toolchains_row(docker_client, mnn_repo: Path, tmp_path: Path,
                                                       workspace: Workspace, toolchains) -> None:
    config = {**CONFIG, "toolchains": [CONFIG["toolchains"][0], {
        "id": "broken", "kind": "source", "version": "2.9.4", "repository": str(mnn_repo), "ref": "no-such-tag"}]}
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "harness", "build", "broken", "--config", str(tmp_path / "matrix.yaml")]
    env = {**os.environ, "MNN_MATRIX_HOME": str(tmp_path / "ws")}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "broken: failed" in done.stdout and "no-such-tag" in done.stdout
    space = Workspace(tmp_path / "ws", shared_envs=workspace.envs)
    results = run_matrix(tmp_path / "matrix.yaml", Selection(), space, jobs=2, fresh=True,
                         progress=Progress(quiet=True))
    [broken] = [t for t in results.toolchains if t.id == "broken"]
    assert broken.status == "unavailable" and "the build failed" in broken.reason and "no-such-tag" in broken.reason
    assert broken.log_tail and results.cells  # the rest of the matrix ran


def test_no_daemon_is_explained_without_a_traceback(tmp_path: Path, workspace: Workspace, toolchains) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "MNN_MATRIX_HOME": str(tmp_path / "ws"),
           "MNN_MATRIX_ENVS": str(workspace.envs)}
    command = [sys.executable, "-m", "harness", "build", "src-3.0.1", "--config", str(REPO / "matrix.yaml")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert f"no Docker daemon at unix://{tmp_path}/no-docker.sock: start one" in done.stderr
    done = subprocess.run([sys.executable, "-m", "harness", "matrix", "--config", str(REPO / "matrix.yaml"),
                           "--toolchain", "pypi-3.0.0", "--toolchain", "src-3.0.1", "--model", "micro-conv",
                           "--variant", "fp32", "-q", "--no-reproducers"], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "ws" / "results" / "results.md").read_text()
    assert "**src-3.0.1** (source 3.0.1): source toolchains need Docker: no Docker daemon" in markdown


def test_permission_problems_say_how_to_get_access() -> None:
    message = containers.explain(PermissionError(13, "Permission denied"), "unix:///var/run/docker.sock")
    assert "usermod -aG docker" in message
