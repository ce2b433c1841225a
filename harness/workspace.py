"""Where the harness keeps what it makes: toolchain envs, built models, the run in progress."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
    def store(self) -> Path:
        """Conversions and runs by content, with the converted models, kept between runs (harness.store)."""
        return self.root / "store"


SCRATCH = re.compile(r"mnnm-(\d+)-")  # mnnm-<pid of the owner>-<tag><random>


def scratch_dir(tag: str = "") -> Path:
    """A new private directory for worker sockets and logs, short enough for Unix socket paths (107 bytes).

    It is in the system temp folder and named with this process's id; its owner removes it when it
    closes, and one left by a killed process is swept when the next one is made.
    """
    sweep_scratch()
    return Path(tempfile.mkdtemp(prefix=f"mnnm-{os.getpid()}-{tag}"))


@contextmanager
def scratch(tag: str = "") -> Iterator[Path]:
    """A scratch directory (see `scratch_dir`) for the duration of a block."""
    path = scratch_dir(tag)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_scratch(folder: Path | None = None) -> list[Path]:
    """Remove our scratch directories whose owning process is gone; return what was removed."""
    swept = []
    for path in Path(folder or tempfile.gettempdir()).glob("mnnm-*"):
        owner = SCRATCH.match(path.name)
        if owner and _ours(path) and not _alive(int(owner[1])):
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
    return swept


def _ours(path: Path) -> bool:
    try:
        return path.is_dir() and path.stat().st_uid == os.getuid()
    except OSError:  # swept meanwhile by someone else
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
