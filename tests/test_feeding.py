"""Inputs are fed in the dtype the converted model declares, outputs are read whatever their size, and an
API's documented limits get their own verdict: all on real MNN, through the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from harness.matrix import run_matrix
from harness.progress import Progress
from harness.records import Verdict
from harness.selection import Selection
from harness.workspace import Workspace

TOOLCHAINS = [{"id": "pypi-3.0.0", "kind": "pypi", "version": "3.0.0"},
              {"id": "pypi-3.6.1", "kind": "pypi", "version": "3.6.1"}]


def _model(path: Path, nodes: list, inputs: list, outputs: list, initializers: tuple = ()) -> str:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _io(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.fixture(scope="module")
def verdicts(workspace: Workspace, toolchains, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(model, converter, runtime, api) -> cell, for a handful of models that probe feeding and reading."""
    tmp = tmp_path_factory.mktemp("feeding")
    tensor = onnx.numpy_helper.from_array
    models = [
        _model(tmp / "int8_input.onnx", [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
               [_io("x", TensorProto.INT8, [2, 3])], [_io("y", TensorProto.FLOAT, [2, 3])]),
        _model(tmp / "axes_input.onnx", [helper.make_node("Unsqueeze", ["x", "axes"], ["y"])],
               [_io("x", TensorProto.FLOAT, [3, 4]), _io("axes", TensorProto.INT64, [1])],
               [_io("y", TensorProto.FLOAT, [1, 3, 4])]),
        _model(tmp / "unused_input.onnx", [helper.make_node("Relu", ["x"], ["y"])],
               [_io("x", TensorProto.FLOAT, [4]), _io("z", TensorProto.FLOAT, [4])],
               [_io("y", TensorProto.FLOAT, [4])]),
        _model(tmp / "empty_output.onnx", [helper.make_node("Slice", ["x", "s", "e"], ["y"])],
               [_io("x", TensorProto.FLOAT, [4])], [_io("y", TensorProto.FLOAT, [0])],
               [tensor(np.array([2], np.int64), "s"), tensor(np.array([2], np.int64), "e")]),
        _model(tmp / "bool_io.onnx", [helper.make_node("Not", ["x"], ["y"])],
               [_io("x", TensorProto.BOOL, [4])], [_io("y", TensorProto.BOOL, [4])]),
    ]
    config = {"toolchains": TOOLCHAINS,
              "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}}],
              "models": [{"tag": "micro", "variants": ["fp32"]}],
              "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2}}
    (tmp / "matrix.yaml").write_text(yaml.safe_dump(config))
    results = run_matrix(tmp / "matrix.yaml", Selection(models=tuple(models)),
                         Workspace(tmp / "ws", shared_envs=workspace.envs), jobs=2, fresh=True,
                         progress=Progress(quiet=True))
    return {(Path(c.model).stem if "/" in c.model else c.model, c.converter, c.runtime, c.api): c
            for c in results.cells}


def _cells(verdicts: dict, model: str, api: str | None = None) -> list:
    return [c for (m, _, _, a), c in verdicts.items() if model in m and (api is None or a == api)]


def test_an_int8_input_is_never_fed_as_another_dtype(verdicts: dict) -> None:
    cells = _cells(verdicts, "int8_input")
    assert cells and all(c.outcome.verdict == Verdict.API_UNSUPPORTED for c in cells), [c.outcome for c in cells]
    assert all("int8" in c.outcome.reason for c in cells)


def test_value_dependent_shapes_are_a_session_api_limit_not_an_op_failure(verdicts: dict) -> None:
    assert all(c.outcome.verdict == Verdict.API_UNSUPPORTED and "Session API" in c.outcome.reason
               for c in _cells(verdicts, "axes_input", "session"))
    module = _cells(verdicts, "axes_input", "module")
    assert module and all(c.outcome.verdict == Verdict.PASS and c.fed == {"axes": "int64->int32"} for c in module)


def test_an_input_the_converter_pruned_is_not_fed_and_the_cell_says_so(verdicts: dict) -> None:
    session = _cells(verdicts, "unused_input", "session")
    assert session and all(c.outcome.verdict == Verdict.PASS for c in session), [c.outcome for c in session]
    assert all(c.fed == {"z": "not an input of the converted model: not fed"} for c in session)


def test_a_size_0_output_is_read_from_its_shape(verdicts: dict) -> None:
    cells = _cells(verdicts, "empty_output")
    assert cells and all(c.outcome.verdict == Verdict.PASS for c in cells), [c.outcome for c in cells]
    assert all(c.outputs[0].shape == [0] for c in cells)


def test_bool_outputs_are_compared_as_bools(verdicts: dict) -> None:
    cells = _cells(verdicts, "bool_io")
    assert cells and all(c.outcome.verdict == Verdict.PASS for c in cells), [c.outcome for c in cells]
    assert all(c.outputs[0].reference_dtype == "bool" and c.fed == {"x": "bool->int32"} for c in cells)
