"""matrix.yaml validation: every mistake names the file, the key path and the bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import models
from harness.config import ConfigError, load_matrix
from harness.matrix import load
from harness.selection import Selection

REPO = Path(__file__).resolve().parent.parent
GOOD = yaml.safe_load((REPO / "matrix.yaml").read_text())


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "matrix.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_matrix(path, set(models.ZOO), set(models.TAGS))
    return error.value.problems


def changed(edit) -> str:
    data = yaml.safe_load((REPO / "matrix.yaml").read_text())
    edit(data)
    return yaml.safe_dump(data, sort_keys=False)


def test_the_default_matrix_is_valid_and_lists_every_release_in_version_order() -> None:
    matrix = load(REPO / "matrix.yaml", Selection())
    assert [t.version for t in matrix.toolchains] == ["2.9.4", "3.0.0", "3.0.1", "3.1.0", "3.2.0", "3.4.0", "3.4.1",
                                                      "3.5.0", "3.6.0", "3.6.1", "latest"]
    assert {t.version for t in matrix.toolchains if t.kind == "pypi"} == {
        "3.0.0", "3.1.0", "3.2.0", "3.4.0", "3.4.1", "3.5.0", "3.6.0", "3.6.1"}  # every MNN release on PyPI
    assert {"fp32", "fp16", "wq8", "wq8-sym", "fuse"} <= {v.id for v in matrix.variants}
    assert set(matrix.run.apis) == {"module", "session"} and matrix.run.repeat >= 3


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["run"].update(thread=2), "run.thread: Extra inputs are not permitted (got 2)"),
    (lambda d: d["toolchains"][1].update(version=3.2),
     "toolchains[1].version: Input should be a valid string (got 3.2)"),
    (lambda d: d["run"].update(repeat="three"), "run.repeat: Input should be a valid integer"),
    (lambda d: d["run"].update(apis=["module", "graph"]),
     "run.apis[1]: Input should be 'module' or 'session' (got 'graph')"),
    (lambda d: d.update(runtimes=["pypi-3.6.1", "pypi-9.9"]), "runtimes[1]: undefined toolchain (defined: "),
    (lambda d: d["models"].insert(0, {"name": "resnet", "variants": ["fp32"]}), "models[0].name: no such model"),
    (lambda d: d["models"].insert(0, {"tag": "audio", "variants": ["fp32"]}), "models[0].tag: no model has this tag"),
    (lambda d: d["models"][0]["variants"].append("int4"), "variants[3]: undefined variant (defined: fp16, fp32"),
    (lambda d: d["toolchains"].insert(1, dict(d["toolchains"][0])),
     "toolchains[1].id: duplicate id (got 'src-2.9.4')"),
    (lambda d: d["variants"][0]["tolerance"].clear(), "variants[0].tolerance: Value error, a tolerance needs"),
])
def test_each_mistake_is_reported_with_file_key_path_and_value(tmp_path: Path, edit, expected: str) -> None:
    problems = problems_of(tmp_path, changed(edit))
    assert any(expected in p and p.startswith(str(tmp_path / "matrix.yaml") + ":") for p in problems), problems


def test_errors_give_the_line_of_the_bad_key(tmp_path: Path) -> None:
    text = (REPO / "matrix.yaml").read_text().replace("  threads: 1", "  threads: many")
    [problem] = problems_of(tmp_path, text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "threads: many" in t)
    assert problem.startswith(f"{tmp_path / 'matrix.yaml'}:{line}: run.threads: ")


def test_duplicate_yaml_keys_are_a_mistake_not_a_silent_override(tmp_path: Path) -> None:
    text = (REPO / "matrix.yaml").read_text().replace("  threads: 1", "  threads: 1\n  threads: 4")
    [problem] = problems_of(tmp_path, text)
    assert "run: duplicate key 'threads'" in problem


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    assert "cannot read" in problems_of_missing(tmp_path / "nope.yaml")
    assert "not valid YAML" in problems_of(tmp_path, "toolchains: [unclosed")[0]


def problems_of_missing(path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        load_matrix(path, set(models.ZOO), set(models.TAGS))
    return str(error.value)


def test_the_command_line_reports_mistakes_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(changed(lambda d: (d["run"].update(thread=2), d["toolchains"][0].update(kind="conda"))))
    done = subprocess.run([sys.executable, "-m", "harness", "matrix", "--config", str(bad), "-q"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"error: {bad}:" in done.stderr and "run.thread" in done.stderr and "toolchains[0].kind" in done.stderr


def test_narrowing_options_are_checked_too(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness", "matrix", "--config", str(REPO / "matrix.yaml"),
                           "--toolchain", "pypi-1.0", "--model", "not-a-model", "-q"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--toolchain pypi-1.0: not in the matrix" in done.stderr
    assert "--model not-a-model: no zoo model or tag" in done.stderr


@pytest.mark.parametrize(("models", "shard", "expected"), [
    ((), (), {"zoo", "onnx-node", "llm"}),
    (("tiny-llama",), (), {"llm"}),  # an llm model alone: no zoo error about it
    (("conv", "tiny-llama"), (), {"zoo", "llm"}),
    (("no-such-model",), (), {"zoo"}),  # the zoo owns unknown names, and says what is wrong with them
    ((), (1, 4), {"zoo", "onnx-node"}),  # the llm suite has no shards
])
def test_a_run_naming_no_suite_runs_the_suites_whose_models_it_names(models: tuple[str, ...], shard, expected) -> None:
    from harness.suites import SUITES

    matrix = load(REPO / "matrix.yaml", Selection())
    selection = Selection(models=models, shard=shard)
    assert {name for name, suite in SUITES.items() if suite.enabled(matrix, selection)} == expected
