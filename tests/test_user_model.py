"""Bring your own model: `nox -s matrix -- --model path/to/model.onnx [--inputs x.npz] [--dim name=N]`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.modelstore import ModelError, make_inputs, prepare_user_model
from harness.workspace import Workspace
from models.graph import INT64, Graph

REPO = Path(__file__).resolve().parent.parent


def user_model(path: Path) -> Path:
    """Token ids into an embedding of 50 rows, plus a float input, with symbolic batch and seq."""
    g = Graph("mine", seed=3)
    ids = g.input("token_ids", ["batch", "seq"], INT64)
    features = g.input("features", ["batch", "seq", 8])
    embedded = g.op("Gather", [g.weight(50, 8, scale=1.0), ids], axis=0)
    g.output(g.op("MatMul", [g.op("Add", [embedded, features]), g.weight(8, 4)]), "scores")
    onnx.save(g.model(17), str(path))
    return path


def test_inputs_come_from_the_specs_with_ids_in_the_valid_range(tmp_path: Path) -> None:
    model = onnx.load(str(user_model(tmp_path / "mine.onnx")))
    inputs = make_inputs(model, {"batch": 2, "seq": 64}, np.random.default_rng(0))
    assert inputs["token_ids"].shape == (2, 64) and inputs["token_ids"].dtype == np.int64
    assert inputs["token_ids"].min() >= 0 and inputs["token_ids"].max() < 50
    assert inputs["features"].shape == (2, 64, 8) and inputs["features"].dtype == np.float32


def test_symbolic_dims_without_values_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="--dim batch=N --dim seq=N"):
        prepare_user_model(user_model(tmp_path / "mine.onnx"), tmp_path / "store")


def test_given_inputs_are_used_and_checked(tmp_path: Path) -> None:
    path = user_model(tmp_path / "mine.onnx")
    np.savez(tmp_path / "in.npz", token_ids=np.zeros((1, 3), np.int64), features=np.ones((1, 3, 8), np.float32))
    prepared = prepare_user_model(path, tmp_path / "store", tmp_path / "in.npz")
    assert prepared.inputs["token_ids"]["shape"] == [1, 3] and (prepared.load_inputs()["token_ids"] == 0).all()
    np.savez(tmp_path / "wrong.npz", ids=np.zeros((1, 3), np.int64))
    with pytest.raises(ModelError, match="the model's inputs are"):
        prepare_user_model(path, tmp_path / "store", tmp_path / "wrong.npz")


@pytest.mark.parametrize(("content", "message"), [
    (b"not a model at all", "not an ONNX model"),
    (None, "no such file"),
])
def test_a_file_that_is_not_onnx_is_refused_before_any_mnn_work(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        prepare_user_model(path, tmp_path / "store")


def test_a_model_onnxruntime_cannot_run_is_refused(tmp_path: Path) -> None:
    g = Graph("broken")
    g.output(g.op("MatMul", [g.input("x", [2, 3]), g.weight(3, 4)]), "y")
    model = g.model(17)
    model.graph.initializer[0].dims[:] = [5, 4]  # the weight no longer fits the input
    model.graph.initializer[0].raw_data = np.zeros((5, 4), np.float32).tobytes()
    onnx.save(model, str(tmp_path / "broken.onnx"))
    with pytest.raises(ModelError, match=f"onnxruntime cannot run {tmp_path / 'broken.onnx'}: .*Incompatible"):
        prepare_user_model(tmp_path / "broken.onnx", tmp_path / "store")


def test_a_users_model_goes_through_the_same_cells_and_report(tmp_path: Path, workspace: Workspace,
                                                              toolchains) -> None:
    path = user_model(tmp_path / "mine.onnx")
    env = {**os.environ, "MNN_MATRIX_HOME": str(tmp_path / "ws"), "MNN_MATRIX_ENVS": str(workspace.envs)}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "matrix", "--config", str(REPO / "matrix.yaml"), "--model", str(path),
         "--dim", "batch=1", "--dim", "seq=16", "--toolchain", "pypi-3.0.0", "--toolchain", "pypi-3.6.1",
         "--variant", "fp32", "--variant", "fp16", "-q"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "ws" / "results"  # a narrowed run leaves results/ alone
    results = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["mine"] and results["models"][0]["source"] == str(path)
    assert len(results["cells"]) == 2 * 2 * 2 * 2  # variants x converters x runtimes x APIs
    assert all(c["outcome"]["verdict"] == "pass" for c in results["cells"]), results["cells"]
    assert "### mine" in (out / "results.md").read_text()


def test_a_bad_model_path_fails_fast_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "notes.onnx").write_text("hello")
    done = subprocess.run([sys.executable, "-m", "harness", "matrix", "--config", str(REPO / "matrix.yaml"),
                           "--model", str(tmp_path / "notes.onnx"), "-q"],
                          env={**os.environ, "MNN_MATRIX_HOME": str(tmp_path / "ws")}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: {tmp_path / 'notes.onnx'}: not an ONNX model" in done.stderr
    assert not (tmp_path / "ws" / "envs").exists(), "no toolchain work before the model is checked"
