"""Every external program the harness and the tests call is provided (by .ci/run, by the system, or by nox), and
the tests that need one .ci/run may fail to install skip, saying how to get it. The programs are found in the code
(subprocess calls, `shutil.which`, nox's external runs, client libraries of daemons), so a new call fails here
until this table says where the program comes from."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CI_RUN = REPO / ".ci" / "run"
DAEMON_CLIENTS = {"docker": "dockerd"}  # an import of the library means a call to the daemon
RUNNERS = {"run", "Popen", "call", "check_call", "check_output"}  # of subprocess


@dataclass(frozen=True)
class Program:
    """Where a program comes from, and the test files that skip without it (file -> the word their reason uses)."""

    provider: str  # ".ci/run" (apt, where it can), "system" (wherever the tests run), or "optional" (tests skip)
    skips: dict[str, str] = field(default_factory=dict)


PROGRAMS = {
    "dockerd": Program(".ci/run", {"tests/test_docker.py": "docker daemon"}),
    "debootstrap": Program(".ci/run", {"tests/test_docker.py": "debootstrap"}),
    "chromium": Program(".ci/run", {"tests/test_html_report.py": "chromium"}),
    "chromium-browser": Program("optional", {"tests/test_html_report.py": "chromium"}),  # Ubuntu's name for it
    "node": Program(".ci/run", {"tests/test_workflows.py": "node"}),
    "npm": Program(".ci/run", {"tests/test_workflows.py": "npm"}),
    "git": Program(".ci/run"),  # a clone of this repository has it
    "tar": Program(".ci/run"),
    "sh": Program("system"),
}


def sources() -> list[Path]:
    return sorted([*REPO.glob("harness/**/*.py"), *REPO.glob("tests/*.py"), REPO / "noxfile.py"])


def literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def called_programs(tree: ast.AST) -> set[str]:
    """Programs a module runs: subprocess argv literals, `shutil.which`, nox's `external=True` runs, daemons."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {DAEMON_CLIENTS[n.split(".")[0]] for n in names if n.split(".")[0] in DAEMON_CLIENTS}
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or not node.args:
            continue
        owner, name, first = ast.unparse(node.func.value), node.func.attr, node.args[0]
        if (owner, name) == ("shutil", "which"):
            found.add(literal(first))
        elif owner == "subprocess" and name in RUNNERS and isinstance(first, ast.List | ast.Tuple) and first.elts:
            found.add(literal(first.elts[0]))  # None for sys.executable and the like: the running Python
        elif owner == "session" and name == "run" and any(k.arg == "external" for k in node.keywords):
            found.add(literal(first))  # without external=True, nox runs only what it installed in the session
    return {os.path.basename(program) for program in found if program}


def where_called() -> dict[str, list[str]]:
    calls: dict[str, list[str]] = {}
    for path in sources():
        for program in called_programs(ast.parse(path.read_text(), str(path))):
            calls.setdefault(program, []).append(str(path.relative_to(REPO)))
    return calls


def ci_needs() -> dict[str, str]:
    """What .ci/run installs: `need PROGRAM PACKAGE...` lines, program -> packages."""
    lines = re.findall(r"^need (\S+) (\"[^\"]+\"|\S+)", CI_RUN.read_text(), re.MULTILINE)
    return {program: packages.strip('"') for program, packages in lines}


def skip_reasons(path: Path) -> list[str]:
    """The text of every pytest.skip / skipif / importorskip reason in a test file, lowercased."""
    reasons = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("skip", "skipif", "importorskip"):
            parts = [n.value for arg in [*node.args, *(k.value for k in node.keywords)] for n in ast.walk(arg)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            reasons.append(" ".join(parts).lower())
    return reasons


def test_every_program_the_code_calls_is_declared_and_every_declared_one_is_called() -> None:
    calls = where_called()
    undeclared = {program: files for program, files in calls.items() if program not in PROGRAMS}
    assert not undeclared, f"add these to PROGRAMS (and to .ci/run, or make their tests skip): {undeclared}"
    assert not set(PROGRAMS) - set(calls), "programs no code calls any more: drop them from PROGRAMS"


def test_each_program_is_installed_by_ci_run_or_its_tests_skip() -> None:
    needs = ci_needs()
    for program, declared in PROGRAMS.items():
        assert (program in needs) == (declared.provider == ".ci/run"), program
        assert declared.provider != "optional" or declared.skips, f"nothing provides {program}: its tests must skip"


def test_tests_that_need_a_program_skip_saying_how_to_get_it() -> None:
    for program, declared in PROGRAMS.items():
        for test_file, word in declared.skips.items():
            reasons = [r for r in skip_reasons(REPO / test_file) if word in r]
            assert reasons, f"{test_file} has no skip naming {word!r} (for {program})"
            assert all(any(how in r for how in ("install", ".ci/run", "start")) for r in reasons), reasons


def test_a_daemon_program_is_found_through_its_client_library() -> None:
    found = called_programs(ast.parse("import docker\nshutil.which('x')\nsubprocess.run(['y', '-v'])\n"
                                      "subprocess.run([sys.executable, '-m', 'pip'])\n"
                                      "session.run('z', external=True)\nsession.run('pytest')\n"))
    assert found == {"dockerd", "x", "y", "z"}


def test_ci_run_installs_a_daemon_next_to_a_docker_cli_alone(tmp_path: Path) -> None:
    """`command -v dockerd` fails where only the docker CLI is: .ci/run then installs the daemon's package."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Docker version 27'\n")
    (bin_dir / "docker").chmod(0o755)
    for tool in ("dirname", "python3"):  # what .ci/run runs before --print-missing exits
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {"PATH": str(bin_dir)}
    missing = subprocess.run(["/bin/sh", str(CI_RUN), "--print-missing"], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
    assert missing[:1] == ["docker.io"] and set(missing) >= {"debootstrap", "chromium", "npm", "git"}
    (bin_dir / "dockerd").write_text("#!/bin/sh\n")
    (bin_dir / "dockerd").chmod(0o755)
    missing = subprocess.run(["/bin/sh", str(CI_RUN), "--print-missing"], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
    assert "docker.io" not in missing and "debootstrap" in missing


@pytest.mark.parametrize("step", ["python3 -m pip install nox && python3 -m nox -s tests"])
def test_ci_run_ends_with_the_readmes_test_command(step: str) -> None:
    assert step in (REPO / "README.md").read_text()
    assert CI_RUN.read_text().rstrip().splitlines()[-1] == step
