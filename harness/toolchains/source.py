"""Source toolchains: MNN built from a commit by `nox -s build` (harness.sourcebuild), whose workers run in the
toolchain's image with no network, the worker script mounted read-only and the workspace at the same path.

How one converts a model: `harness.client.Client.convert` sends a convert request to a `Worker`
(harness.supervisor); the worker is forked, in the one container `launch` starts here with `fork_server=True`, by
harness/worker.py's fork server, and its `convert` handler calls MNNConvert through the image's PyMNN `_tools`
extension, writing the model to the store's path (the same inside and out). The reply says whether the file was
written; the client classifies a failure by its log, and a crash or timeout by how the worker was lost."""

from __future__ import annotations

import os
from pathlib import Path

from harness import containers, sourcebuild
from harness.supervisor import OOM_SCORE_ADJ, WORKER_ENVIRONMENT, WORKER_SCRIPT, Process
from harness.toolchains import ProvisionError, Toolchain

WORKER_IN_IMAGE = "/opt/mnn-matrix/worker.py"


class SourceToolchain(Toolchain):
    """Finds the image `nox -s build` made for this toolchain; a missing image is explained, not built."""

    image: str = ""

    def provision(self) -> dict:
        try:
            client = containers.client()
        except containers.DockerUnavailable as error:
            raise ProvisionError(f"source toolchains need Docker: {error}") from None
        image = sourcebuild.find_image(client, self.id)
        if image is None:
            record = sourcebuild.read_record(self.workspace, self.id)
            if record is not None and record.status == "failed":
                raise ProvisionError(f"the build failed: {record.reason}", record.log_tail)
            raise ProvisionError(f"not built yet: run `nox -s build -- {self.id}`")
        labels = image.labels
        self.image = image.tags[0] if image.tags else image.id
        return {"kind": "source", "image": self.image, "image_id": image.id,
                "sha": labels.get(f"{sourcebuild.LABEL}.sha", ""), "ref": labels.get(f"{sourcebuild.LABEL}.ref", ""),
                "repository": labels.get(f"{sourcebuild.LABEL}.repository", ""),
                "recipe": labels.get(f"{sourcebuild.LABEL}.recipe", "")[:12]}

    def python_command(self, cwd: Path) -> list[str]:
        """A throwaway container of the image, without network, with the workspace and `cwd` at their paths."""
        mounts = [f"--volume={path}:{path}" for path in sorted({str(self.workspace.root), str(cwd)})]
        return ["docker", "run", "--rm", "--network=none", f"--user={os.getuid()}:{os.getgid()}", *mounts,
                f"--workdir={cwd}", self.image, "python", "-I"]

    forks = True  # Workers fork from a server this launches (harness/forkserver.py), all in one container

    def launch(self, socket_path: Path, log_path: Path, fork_server: bool = False) -> Process:
        """A container; a fork server's children use its mounts, so they must live beside its socket and log."""
        mounts = {str(WORKER_SCRIPT): {"bind": WORKER_IN_IMAGE, "mode": "ro"}}
        for shared in {socket_path.parent, log_path.parent, self.workspace.root}:
            mounts[str(shared)] = {"bind": str(shared), "mode": "rw"}  # same paths inside and out
        mode = ["--fork-server"] if fork_server else []
        container = containers.client().containers.run(
            self.image, ["python", "-I", WORKER_IN_IMAGE, "--socket", str(socket_path), "--log", str(log_path),
                         *mode],
            detach=True, network_mode="none", user=f"{os.getuid()}:{os.getgid()}", volumes=mounts,
            environment=WORKER_ENVIRONMENT, oom_score_adj=OOM_SCORE_ADJ,  # its memory cap is set by the Worker
            labels={f"{sourcebuild.LABEL}.worker": self.id})
        return containers.ContainerProcess(container)
