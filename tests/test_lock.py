"""The locked reference stack: `requirements/lock.txt` pins every dependency, nox installs from it, and the
toolchain venvs take their numpy from it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from pathlib import Path

import nox
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.config import PypiSpec
from harness.toolchains import Toolchain
from harness.toolchains.pypi import LOCK, PypiToolchain, locked_pins
from harness.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
REGENERATE = "nox -s lock"
REFERENCE_STACK = ("onnx", "onnxruntime", "numpy")  # they decide the node cases and the reference outputs


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for pin in locked_pins(LOCK):
        requirement = Requirement(pin)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{pin!r} in {LOCK} is not an exact pin"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} is pinned twice in {LOCK}"
        pins[name] = specifiers[0].version
    return pins


def _direct_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    return [Requirement(line) for line in [*project["dependencies"], *(line for extra in extras for line in extra)]]


def test_the_lock_pins_every_direct_dependency_to_one_version_pyproject_allows() -> None:
    pins = _pins()
    for requirement in _direct_dependencies():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in {LOCK}: run `{REGENERATE} -- --no-upgrade`"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK} pins {name}=={pins[name]}, which pyproject.toml's {requirement} refuses: run `{REGENERATE}`"


def test_the_lock_holds_no_index_or_local_path() -> None:
    text = LOCK.read_text()
    options = [line for line in text.splitlines() if line.lstrip().startswith("-")]
    assert not options, f"{LOCK} carries pip options (index URLs, find-links, editables): {options}"
    for local in ("file:", "://", "/opt/", "/root/", "/home/"):
        assert local not in text, f"{LOCK} names a machine-local location ({local})"


class RecordingSession:
    """Stands in for `nox.Session` to learn what a session installs; it installs and runs nothing."""

    posargs: list[str] = []  # noqa: RUF012

    def __init__(self) -> None:
        self.installs: list[tuple[str, ...]] = []

    def install(self, *args: str, **kwargs: object) -> None:
        self.installs.append(args)

    def run(self, *args: str, **kwargs: object) -> None:
        pass


def test_every_nox_session_installs_under_the_lock() -> None:
    spec = importlib.util.spec_from_file_location("noxfile_under_test", REPO / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    assert (REPO / noxfile.LOCK).resolve() == LOCK, "the noxfile and the toolchains read different locks"
    sessions = {name: func for name, func in nox.registry.get().items()
                if getattr(func, "__module__", "") == "noxfile_under_test"
                or getattr(getattr(func, "func", None), "__module__", "") == "noxfile_under_test"}
    assert {"tests", "matrix", "lint", "lock"} <= sessions.keys()
    for name, func in sessions.items():
        session = RecordingSession()
        func(session)
        for args in session.installs:
            flag = next((i for i, arg in enumerate(args) if arg in ("-c", "-r", "--constraint", "--requirement")), None)
            assert flag is not None and args[flag + 1] == noxfile.LOCK, \
                f"`nox -s {name}` installs {' '.join(args)} without the lock ({noxfile.LOCK})"


@pytest.mark.parametrize("package", REFERENCE_STACK)
def test_the_installed_reference_stack_is_the_locked_one(package: str) -> None:
    installed, locked = importlib.metadata.version(package), _pins()[package]
    assert installed == locked, (
        f"{package} {installed} is installed but {LOCK.relative_to(REPO)} pins {locked}: results would not match "
        f"other installs of this commit. Install from the lock (`nox -s tests`, or `pip install -c "
        f"requirements/lock.txt -e .[test]`), or move the lock to new versions with `{REGENERATE}`.")


def test_the_toolchain_venvs_run_the_locked_numpy(toolchains: dict[str, Toolchain]) -> None:
    for toolchain in toolchains.values():
        assert isinstance(toolchain, PypiToolchain)
        numpy = subprocess.run([str(toolchain.python), "-I", "-c", "import numpy; print(numpy.__version__)"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert numpy == _pins()["numpy"], f"{toolchain.id} has numpy {numpy}: its venv predates the lock"


def _bumped_lock(directory: Path, package: str, version: str) -> Path:
    lines = LOCK.read_text().splitlines()
    bumped = [f"{package}=={version}" if line.startswith(f"{package}==") else line for line in lines]
    assert bumped != lines
    lock = directory / "lock.txt"
    lock.write_text("\n".join(bumped) + "\n")
    return lock


def test_a_changed_lock_makes_a_new_toolchain_venv_but_a_changed_comment_does_not(tmp_path: Path) -> None:
    def env_dir(lock: Path) -> Path:
        toolchain = PypiToolchain(PypiSpec(id="pypi-3.6.1", kind="pypi", version="3.6.1"), Workspace(tmp_path))
        toolchain.lock = lock
        return toolchain.env_dir

    commented = tmp_path / "commented.txt"
    commented.write_text(LOCK.read_text().replace("# via", "#   via"))
    assert env_dir(commented) == env_dir(LOCK)
    assert env_dir(_bumped_lock(tmp_path, "numpy", "2.2.6")) != env_dir(LOCK)


def test_a_toolchains_own_numpy_requirement_overrides_the_lock() -> None:
    spec = PypiSpec(id="pypi-3.6.1", kind="pypi", version="3.6.1", requirements=["numpy<2"])
    constraints = PypiToolchain(spec, Workspace(REPO / ".mnn-matrix")).constraints
    assert not any(pin.startswith("numpy==") for pin in constraints)
    assert f"onnx=={_pins()['onnx']}" in constraints


def test_without_a_lock_the_harness_numpy_is_the_pin(tmp_path: Path) -> None:
    assert locked_pins(tmp_path / "absent.txt") == [f"numpy=={importlib.metadata.version('numpy')}"]


def test_a_toolchain_venv_installs_the_numpy_its_lock_pins(tmp_path: Path) -> None:
    """Real pip, real MNN: a lock pinning an older numpy gives a venv with that numpy (2.2.6 has cp310-cp313 wheels)."""
    toolchain = PypiToolchain(PypiSpec(id="pypi-3.6.1", kind="pypi", version="3.6.1"), Workspace(tmp_path))
    toolchain.lock = _bumped_lock(tmp_path, "numpy", "2.2.6")
    try:
        provenance = toolchain.provision()
    finally:
        shutil.rmtree(toolchain.env_dir, ignore_errors=True)  # a venv with MNN is ~100 MB
    assert provenance["numpy_version"] == "2.2.6"
    assert "numpy==2.2.6" in provenance["constraints"]
