"""Post-training quantization with real mnnquant, dynamic quantization at low memory, and the quantization scheme
the converter's weight-quant flags really give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from helpers import run_request
from onnx import helper, numpy_helper

import models
from harness import protocol
from harness.calibration import image_like, write_calibration
from harness.config import Quantize
from harness.matrix import load, run_matrix
from harness.modelstore import prepare_zoo_model
from harness.progress import Progress
from harness.records import Verdict
from harness.report.markdown import render_markdown
from harness.report.summary import quant_category
from harness.selection import Selection
from harness.workspace import Workspace

TOLERANCE = {"min_cosine": 0.99, "max_rel_l2": 0.15}
CONFIG = {
    "toolchains": [{"id": "old", "kind": "pypi", "version": "3.0.0"},
                   {"id": "new", "kind": "pypi", "version": "3.6.1"}],
    "variants": [
        {"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
        {"id": "wq8", "flags": ["--weightQuantBits", "8"], "memory": ["normal", "low"],
         "tolerance": {"max_abs_ratio": 0.05}},
        {"id": "ptq-kl", "quantize": {"feature": "KL", "samples": 4}, "tolerance": TOLERANCE},
        {"id": "ptq-ema", "quantize": {"feature": "EMA", "samples": 4}, "tolerance": TOLERANCE},
        {"id": "ptq-kl-strict", "quantize": {"feature": "KL", "samples": 4},
         "tolerance": {"min_cosine": 0.999999, "max_rel_l2": 0.001}},
    ],
    "models": [{"name": "seq-gru", "variants": ["ptq-kl", "ptq-ema"]},
               {"name": "mobilenet-tiny", "variants": ["ptq-kl", "ptq-kl-strict", "wq8"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}


@pytest.mark.parametrize(("model", "layout"), [("mobilenet-tiny", "image"), ("seq-lstm", "sequence")])
def test_the_calibration_layouts_are_accepted_by_real_mnnquant(model: str, layout: str, tmp_path: Path,
                                                               worker_for) -> None:
    prepared = prepare_zoo_model(models.ZOO[model], tmp_path / "models")
    assert image_like(prepared) == (layout == "image")
    config = write_calibration(prepared, Quantize(feature="KL", samples=3), tmp_path / "calibration")
    assert json.loads(config.read_text())["input_type"] == layout
    worker = worker_for("3.0.0")
    float_model, int8_model = tmp_path / "float.mnn", tmp_path / "int8.mnn"
    worker.request(protocol.convert_request(prepared.onnx_path, float_model))
    reply = worker.request(protocol.quantize_request(float_model, int8_model, config))
    assert reply.header["produced"], reply.header["log"]
    assert "used dataset num: 3" in reply.header["log"]  # the tool read our three samples
    inputs = prepared.load_inputs()
    run = worker.request(run_request(int8_model, inputs, list(prepared.outputs)), inputs)
    assert run.header["ok"]


@pytest.fixture(scope="module")
def quant_run(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains):
    root = tmp_path_factory.mktemp("quant")
    (root / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))
    return run_matrix(root / "matrix.yaml", Selection(), Workspace(root / "ws", shared_envs=workspace.envs),
                      jobs=2, fresh=True, progress=Progress(quiet=True))


def conversion(results, converter: str, model: str, variant: str):
    return next(c for c in results.conversions if (c.converter, c.model, c.variant) == (converter, model, variant))


def test_a_crash_in_the_quantize_stage_is_isolated_and_recorded(quant_run) -> None:
    crashed = conversion(quant_run, "new", "seq-gru", "ptq-kl")  # 3.6.1's tool dies quantizing the GRU model
    assert crashed.outcome.verdict == Verdict.CRASH and crashed.outcome.stage == "quantize"
    assert "SIGSEGV" in crashed.outcome.reason and crashed.float_size_bytes > 0 and crashed.size_bytes == 0
    cells = [c for c in quant_run.cells if (c.converter, c.model, c.variant) == ("new", "seq-gru", "ptq-kl")]
    assert cells and all(c.outcome.stage == "quantize" for c in cells)
    fine = conversion(quant_run, "old", "seq-gru", "ptq-kl")
    assert fine.outcome.verdict == Verdict.PASS and fine.quantized_with == {"feature": "KL", "weight": "MAX_ABS"}


def test_quantized_models_are_smaller_and_run_everywhere(quant_run) -> None:
    mobilenet = conversion(quant_run, "old", "mobilenet-tiny", "ptq-kl")
    assert mobilenet.outcome.verdict == Verdict.PASS and mobilenet.size_bytes < 0.6 * mobilenet.float_size_bytes
    cells = [c for c in quant_run.cells if (c.converter, c.model, c.variant) == ("old", "mobilenet-tiny", "ptq-kl")]
    assert {c.runtime for c in cells} == {"old", "new"}
    # 3.0.0's tool sometimes writes other bytes in one of its three attempts: then every cell says so
    expected = Verdict.NONDETERMINISTIC if mobilenet.reconversion_differs else Verdict.PASS
    for cell in cells:
        assert cell.outcome.verdict == expected, cell.outcome
        [vs_float] = cell.outputs_vs_float
        assert 0.99 < vs_float.cosine <= 1 and vs_float.rel_l2 is not None


def test_the_quantization_tolerance_policy_decides(quant_run) -> None:
    unstable = {(c.converter, c.model, c.variant) for c in quant_run.conversions if c.reconversion_differs}
    ran = [c for c in quant_run.cells if c.variant in ("ptq-kl", "ptq-ema") and c.outputs
           and (c.converter, c.model, c.variant) not in unstable]  # those are nondeterministic, whatever they gave
    assert ran
    for cell in ran:  # cosine and relative L2 error against the reference decide, nothing else
        within = all(d.cosine >= 0.99 and d.rel_l2 <= 0.15 for d in cell.outputs)
        assert (cell.outcome.verdict == Verdict.PASS) == within, cell.outcome
    strict = [c for c in quant_run.cells if c.variant == "ptq-kl-strict"
              and (c.converter, c.model, c.variant) not in unstable and c.outputs]
    assert strict and all(quant_category(c) == "drifted" for c in strict)
    assert all("relative L2 error" in c.outcome.reason for c in strict)


def test_weight_quantized_models_run_at_normal_and_low_memory(quant_run) -> None:
    cells = [c for c in quant_run.cells if c.variant == "wq8"]
    assert {c.memory for c in cells} == {"normal", "low"}
    low = {(c.converter, c.runtime, c.api): c for c in cells if c.memory == "low"}
    normal = {(c.converter, c.runtime, c.api): c for c in cells if c.memory == "normal"}
    assert low.keys() == normal.keys()
    # dynamic quantization computes differently: the outputs move (on 3.0.0, past the tolerance)
    assert any(low[k].outputs[0].max_abs != normal[k].outputs[0].max_abs for k in low)


def test_the_results_table_has_a_quantization_section(quant_run) -> None:
    markdown = render_markdown(quant_run)
    assert "## Post-training quantization" in markdown and "## Dynamic quantization" in markdown
    assert "| seq-gru | ptq-kl | new | 💥 crash at quantize |" in markdown



VARIANT_FLAGS = {v.id: v.flags for v in load(Path(__file__).resolve().parent.parent / "matrix.yaml",
                                              Selection()).variants}


def _grid_probe(path: Path, rng: np.random.Generator) -> np.ndarray:
    """A MatMul whose weights lie on a 256-level grid, each output channel holding both ends (-1/2 and 127/256),
    fed the identity so that its output is the weights as the runtime dequantized them: 8-bit asymmetric
    quantization (scale (max - min) / 255 = 1/256) stores them exactly, symmetric (absmax / 127) does not."""
    levels = rng.integers(0, 256, size=(64, 32))
    levels[0], levels[1] = 0, 255
    weights = ((levels - 128) / 256).astype(np.float32)
    probe = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64, 64])
    result = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 32])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "probe", [probe], [result],
                              [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return weights


@pytest.mark.parametrize("version", ["3.0.0", "3.6.1"])
@pytest.mark.parametrize(("flags", "scheme"), [
    (VARIANT_FLAGS["wq8"], "asymmetric"),
    (VARIANT_FLAGS["wq8-sym"], "symmetric"),
    (["--weightQuantBits", "8", "--weightQuantAsymmetric"], "symmetric"),  # as MNN's help says to ask for asymmetric
])
def test_weight_quant_flags_give_the_scheme_the_variants_claim(version: str, flags: list[str], scheme: str,
                                                               tmp_path: Path, worker_for) -> None:
    weights = _grid_probe(tmp_path / "probe.onnx", np.random.default_rng(0))
    worker = worker_for(version)
    converted = worker.request(protocol.convert_request(tmp_path / "probe.onnx", tmp_path / "probe.mnn", flags))
    assert converted.header["produced"], converted.header["log"]
    inputs = {"x": np.eye(64, dtype=np.float32)}
    reply = worker.request(run_request(tmp_path / "probe.mnn", inputs, ["y"]), inputs)
    assert reply.header["ok"], reply.header
    stored = reply.arrays["0/y"]
    if scheme == "asymmetric":
        np.testing.assert_allclose(stored, weights, atol=1e-6)
    else:
        steps = stored / (np.abs(weights).max(axis=0) / 127)  # per output channel: absmax / 127
        assert np.abs(stored - weights).max() > 1e-3 and np.allclose(steps, np.round(steps), atol=1e-3)
