"""The real family for real: torch.onnx.export in the exporter venv (built on first use), onnxruntime's opinion
against torch, the export cache, and a real model converted and run by two MNN versions."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from harness.exporter_env import exporter_env
from harness.matrix import run_matrix
from harness.progress import Progress
from harness.realmodels import RealModels, onnxruntime_opinion, prepare_real_models
from harness.records import Verdict
from harness.selection import Selection
from harness.workspace import Workspace
from models import real
from models.real import RealSpec

SMALL = "real-vit-ts"  # a small export (0.4 MB) that both versions run: ViT by the TorchScript-based exporter
BROKEN = RealSpec("real-no-such-arch", "no-such-arch", "dynamo", None, ("real",), "an exporter failure, recorded")


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> tuple[Workspace, RealModels]:
    """One real model and one whose export fails, prepared in a fresh workspace (the exporter venv is shared)."""
    fresh = Workspace(tmp_path_factory.mktemp("real"), shared_envs=workspace.envs)
    return fresh, prepare_real_models([real.REAL[SMALL], BROKEN], fresh)


def test_an_export_is_checked_by_onnxruntime_against_torch(family) -> None:
    _, prepared = family
    model = prepared.models[SMALL]
    assert model.onnxruntime == "agrees"
    assert model.source.startswith("torch 2.13.0") and " torchscript opset 20" in model.source
    assert {"real", "real-vision", "real-torchscript"} <= set(model.tags)
    assert model.inputs == {"pixel_values": {"shape": [1, 3, 32, 32], "dtype": "float32"}}
    assert model.load_reference()["logits"].shape == (1, 10)  # torch eager's output
    assert model.onnx_path.stat().st_size < 4_000_000


def test_an_exporter_failure_is_recorded_not_hidden(family) -> None:
    _, prepared = family
    assert set(prepared.failed) == {BROKEN.name}
    assert prepared.failed[BROKEN.name].startswith("dynamo: KeyError")


def test_an_export_is_deterministic(family, tmp_path: Path) -> None:
    """A second export in another process writes the same bytes."""
    workspace, prepared = family
    spec = real.REAL[SMALL]
    job = {"arch": spec.arch, "exporter": spec.exporter, "opset": spec.opset, "seed": spec.seed, "out": str(tmp_path)}
    exporter_env(workspace).export([job], tmp_path / "export.log")
    assert hashlib.sha256((tmp_path / "model.onnx").read_bytes()).hexdigest() == prepared.models[SMALL].sha256
    for name in ("inputs.npz", "reference.npz"):
        with np.load(tmp_path / name) as again, np.load(Path(prepared.models[SMALL].directory) / name) as first:
            assert sorted(again.files) == sorted(first.files)
            assert all(np.array_equal(again[k], first[k]) for k in first.files)


def test_a_rerun_exports_nothing(family) -> None:
    workspace, prepared = family
    log = workspace.models / "real-export.log"
    written = log.stat().st_mtime_ns
    again = prepare_real_models([real.REAL[SMALL], BROKEN], workspace, say=pytest.fail)  # says nothing either
    assert again == prepared and log.stat().st_mtime_ns == written


def test_onnxruntime_disagreeing_with_torch_is_flagged(family, tmp_path: Path) -> None:
    """A perturbed weight makes onnxruntime's output differ from torch's reference: the model is flagged."""
    _, prepared = family
    model = prepared.models[SMALL]
    graph = onnx.load(str(model.onnx_path))
    weight = max((i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT),
                 key=lambda i: int(np.prod(i.dims)))
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5, weight.name))
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save(graph, str(perturbed))
    opinion = onnxruntime_opinion(perturbed, model.load_inputs(), model.load_reference())
    assert opinion.startswith("disagrees: ") and opinion.endswith(" max abs on logits")
    assert onnxruntime_opinion(model.onnx_path, model.load_inputs(), model.load_reference()) == "agrees"
    broken = tmp_path / "broken.onnx"
    shutil.copyfile(model.onnx_path, broken)
    broken.write_bytes(broken.read_bytes()[:1000])
    assert onnxruntime_opinion(broken, model.load_inputs(), model.load_reference()).startswith("cannot run: ")


def test_a_real_model_converts_and_runs_on_two_mnn_versions(family, workspace: Workspace, toolchains,
                                                             tmp_path: Path) -> None:
    """MNN 3.0.0 and 3.6.1 convert the ViT export and run it, each converted model on both, against torch."""
    fresh, _ = family
    config = tmp_path / "matrix.yaml"
    config.write_text(yaml.safe_dump({
        "toolchains": [{"id": "old", "kind": "pypi", "version": "3.0.0"},
                       {"id": "new", "kind": "pypi", "version": "3.6.1"}],
        "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001, "min_cosine": 0.99999}}],
        "models": [{"tag": "real", "variants": ["fp32"]}],
        "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2}}))
    results = run_matrix(config, Selection(models=(SMALL,)), fresh, jobs=2, fresh=True, progress=Progress(quiet=True))
    [record] = results.models
    assert record.name == SMALL and record.onnxruntime == "agrees" and record.source.startswith("torch ")
    assert len(results.conversions) == 2 and len(results.cells) == 2 * 2 * 2
    verdicts = {(c.converter, c.runtime, c.api): c.outcome.verdict for c in results.cells}
    assert set(verdicts.values()) == {Verdict.PASS}, json.dumps({str(k): v.value for k, v in verdicts.items()})
