"""Where the harness keeps what it makes: toolchain envs, built models, the run in progress."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(".mnn-matrix")


@dataclass(frozen=True)
class Workspace:
    """The harness's working directory: `.mnn-matrix/`, or $MNN_MATRIX_HOME.

    Toolchain envs live in its `envs/` unless $MNN_MATRIX_ENVS names another place.
    """

    root: Path
    shared_envs: Path | None = None  # toolchain envs kept elsewhere (tests share the user's)

    @classmethod
    def default(cls) -> Workspace:
        envs = os.environ.get("MNN_MATRIX_ENVS")
        return cls(Path(os.environ.get("MNN_MATRIX_HOME", DEFAULT_ROOT)).absolute(),
                   Path(envs).absolute() if envs else None)

    @property
    def envs(self) -> Path:
        """Toolchain environments, kept between runs."""
        return self.shared_envs or self.root / "envs"

    @property
    def models(self) -> Path:
        """Built models with their inputs and reference outputs, kept between runs."""
        return self.root / "models"

    @property
    def run(self) -> Path:
        """The current run: its journal and converted models; a finished run is replaced by the next."""
        return self.root / "run"
