"""PyPI toolchains: an MNN wheel in a venv of its own, made once and reused between runs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from harness.supervisor import WORKER_ENVIRONMENT, WORKER_SCRIPT, LocalProcess, Process
from harness.toolchains import ProvisionError, Toolchain, make_venv

PROBE = ("import json, platform, MNN, numpy; print('\\nPROBE ' + json.dumps({'mnn_version': MNN.version(), "
         "'numpy_version': numpy.__version__, 'python': platform.python_version()}))")
LOCK = Path(__file__).resolve().parents[2] / "requirements" / "lock.txt"  # `nox -s lock` writes it


def locked_pins(lock: Path = LOCK) -> list[str]:
    """The lock's `name==version` lines: the constraints every toolchain venv installs under, so that a venv's numpy
    is the harness's. Without the lock (the harness installed from a wheel) the harness's own numpy is the pin."""
    if not lock.is_file():
        return [f"numpy=={importlib.metadata.version('numpy')}"]
    lines = (line.split("#", 1)[0].strip() for line in lock.read_text().splitlines())
    return sorted(line for line in lines if line and not line.startswith("-"))


def _package(requirement: str) -> str:
    """The normalized package name a requirement or pin is about."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[@]", requirement, maxsplit=1)[0]).lower()


class PypiToolchain(Toolchain):
    """`pip install MNN==<version>` into `<workspace>/envs/<id>-<hash of what is installed>`, under the lock's pins."""

    lock: Path = LOCK

    @property
    def requirements(self) -> list[str]:
        return [f"MNN=={self.spec.version}", *self.spec.requirements]

    @property
    def constraints(self) -> list[str]:
        """The lock's pins, but for packages the toolchain's own requirements name (those choose for themselves)."""
        named = {_package(requirement) for requirement in self.requirements}
        return [pin for pin in locked_pins(self.lock) if _package(pin) not in named]

    @property
    def env_dir(self) -> Path:
        recipe = json.dumps([self.requirements, self.constraints, sys.version_info[:2]]).encode()
        return self.workspace.envs / f"{self.id}-{hashlib.sha256(recipe).hexdigest()[:10]}"

    @property
    def python(self) -> Path:
        return self.env_dir / "bin" / "python"

    def provision(self) -> dict:
        marker = self.env_dir / "mnn-matrix-provenance.json"
        if marker.exists():
            return json.loads(marker.read_text())
        constraints = self.env_dir.with_suffix(".constraints.txt")
        constraints.parent.mkdir(parents=True, exist_ok=True)
        constraints.write_text("".join(f"{pin}\n" for pin in self.constraints))
        provenance = make_venv(self.env_dir, [(["-c", str(constraints), *self.requirements],
                                               f"pip could not install {' '.join(self.requirements)}")],
                               PROBE, "MNN does not import")
        if provenance["mnn_version"] != self.spec.version:
            raise ProvisionError(f"installed MNN reports version {provenance['mnn_version']}, "
                                 f"not {self.spec.version}")
        provenance.update(kind="pypi", requirements=self.requirements, constraints=self.constraints,
                          location=str(self.env_dir))
        marker.write_text(json.dumps(provenance, indent=2))
        return provenance

    forks = True  # Workers fork from a server this launches (harness/forkserver.py)

    def python_command(self, cwd: Path) -> list[str]:
        return [str(self.python), "-I"]

    def launch(self, socket_path: Path, log_path: Path, fork_server: bool = False) -> Process:
        mode = ["--fork-server"] if fork_server else []
        with log_path.open("w") as log:  # catches what Python prints before the worker takes over fd 2
            return LocalProcess(subprocess.Popen(
                [str(self.python), "-I", str(WORKER_SCRIPT), "--socket", str(socket_path), "--log", str(log_path),
                 *mode], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={**os.environ, **WORKER_ENVIRONMENT}))
