"""The exporter venv: torch, transformers and onnxscript, pinned, made on first use beside the toolchain venvs.

The harness's own environment has no torch; the real model family (models/real.py) is exported in this venv by
`harness/exporters/export.py`, run as a subprocess. Its identity is a hash of what it installs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.toolchains import ProvisionError, make_venv
from harness.workspace import Workspace

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements" / "exporters.txt"
EXPORT_SCRIPT = Path(__file__).resolve().parent / "exporters" / "export.py"
TORCH = "torch==2.13.0"  # alone first: the CPU build; any other torch request pulls several GB of CUDA packages
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
LEGACY_REQUIREMENTS = REQUIREMENTS.with_name("exporters-legacy.txt")  # MNN's LLM exporters before 3.3 (harness/llm)
PROBE = ("import importlib, json; print('\\nPROBE ' + json.dumps({name: importlib.import_module(name).__version__ "
         "for name in {names}}))")


class ExporterEnvError(ProvisionError):
    """The exporter venv could not be made; `log_tail` shows pip's last words."""


@dataclass(frozen=True)
class ExporterEnv:
    """`<workspace>/exporters/<identity>/` (beside the toolchain venvs): a venv of requirements/exporters.txt."""

    directory: Path
    requirements: Path = REQUIREMENTS
    modules: tuple[str, ...] = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "numpy")  # probed

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.directory / "mnn-matrix-exporter.json"

    def ensure(self) -> dict:
        """Make the venv unless it is complete; return the versions it holds. Raises ExporterEnvError."""
        if self.marker.exists():
            return json.loads(self.marker.read_text())
        versions = make_venv(self.directory, [([TORCH], f"pip could not install {TORCH}"),
                                              (["-r", str(self.requirements)],
                                               f"pip could not install {self.requirements.name}")],
                             PROBE.replace("{names}", repr(self.modules)), "the exporter packages do not import",
                             ExporterEnvError)
        self.marker.write_text(json.dumps(versions, indent=2))
        return versions

    def export(self, jobs: list[dict], log_path: Path) -> None:
        """Run the export script over `jobs` (see its docstring); each job's `export.json` says how it went."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        jobs_path = log_path.with_suffix(".jobs.json")
        jobs_path.write_text(json.dumps(jobs, indent=2))
        with log_path.open("w") as log:
            subprocess.run([str(self.python), "-I", str(EXPORT_SCRIPT), str(jobs_path)], stdin=subprocess.DEVNULL,
                           stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE}, check=False)


def identity(requirements: Path = REQUIREMENTS) -> str:
    """What the venv is: the pins it installs and the Python it runs on."""
    recipe = json.dumps([TORCH, requirements.read_text(), sys.version_info[:2]])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def exporter_env(workspace: Workspace) -> ExporterEnv:
    """The workspace's exporter venv (not made until `ensure`)."""
    return ExporterEnv(workspace.envs.parent / "exporters" / identity())


def legacy_exporter_env(workspace: Workspace) -> ExporterEnv:
    """The venv of MNN's LLM exporters before 3.3, written for transformers 4.x (not made until `ensure`)."""
    return ExporterEnv(workspace.envs.parent / "exporters" / identity(LEGACY_REQUIREMENTS), LEGACY_REQUIREMENTS,
                       ("torch", "transformers", "onnx", "numpy", "onnxslim", "onnxruntime", "peft", "sentencepiece"))
