"""The reference model zoo: builds from code, deterministically, and runs in onnxruntime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import models
from harness.modelstore import prepare_zoo_model
from models import decoder
from models.graph import run_onnxruntime


def digest(directory: Path) -> str:
    return hashlib.sha256(b"".join((directory / name).read_bytes() for name in
                                   ("model.onnx", "inputs.npz", "reference.npz"))).hexdigest()


@pytest.mark.parametrize("name", sorted(models.ZOO))
def test_every_zoo_model_builds_runs_in_onnxruntime_and_says_what_it_guards(name: str, tmp_path: Path) -> None:
    spec = models.ZOO[name]
    prepared = prepare_zoo_model(spec, tmp_path)
    reference = prepared.load_reference()
    assert reference and all(np.isfinite(a).all() for a in reference.values() if a.dtype.kind == "f")
    assert spec.guards and "\n" not in spec.guards and spec.tags
    assert prepared.onnx_path.stat().st_size < 4 * 2**20


def test_building_the_zoo_twice_gives_identical_hashes(tmp_path: Path) -> None:
    first = {n: prepare_zoo_model(s, tmp_path / "a") for n, s in models.ZOO.items()}
    second = {n: prepare_zoo_model(s, tmp_path / "b") for n, s in models.ZOO.items()}
    for name in models.ZOO:
        assert first[name].sha256 == second[name].sha256
        assert digest(Path(first[name].directory)) == digest(Path(second[name].directory)), name


def test_building_is_cached_and_incremental(tmp_path: Path) -> None:
    spec = models.ZOO["micro-conv"]
    built = prepare_zoo_model(spec, tmp_path)
    stamp = built.onnx_path.stat().st_mtime_ns
    assert prepare_zoo_model(spec, tmp_path) == built and built.onnx_path.stat().st_mtime_ns == stamp
    meta = Path(built.directory) / "meta.json"
    meta.write_text(meta.read_text().replace(built.recipe, "an older recipe"))
    rebuilt = prepare_zoo_model(spec, tmp_path)
    assert rebuilt.recipe == built.recipe and rebuilt.onnx_path.stat().st_mtime_ns != stamp


def test_decoder_prefill_then_one_decode_step_matches_the_full_sequence() -> None:
    model = decoder.build()
    tokens = np.random.default_rng(7).integers(0, decoder.Config().vocab, decoder.PROMPT + 1)
    full = run_onnxruntime(model, decoder.step_inputs(tokens, decoder.empty_past()))
    prefill = run_onnxruntime(model, decoder.step_inputs(tokens[:-1], decoder.empty_past()))
    step = run_onnxruntime(model, decoder.step_inputs(tokens[-1:], prefill["presents"]))
    np.testing.assert_allclose(step["logits"], full["logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(step["presents"], full["presents"], atol=1e-5)
    assert step["logits"].shape == (1, 1, decoder.Config().vocab)


def test_decoder_exports_the_llm_exporter_interface() -> None:
    graph = decoder.build().graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "position_ids", "past_key_values",
                                             "logits_index"]
    assert [o.name for o in graph.output] == ["logits", "presents"]
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input_ids"] == [1, "seq"] and dims["past_key_values"][4] == "past"
    ops = {node.op_type for node in graph.node}
    assert {"Sigmoid", "Softmax", "Sqrt", "ReduceMean", "Expand", "Cos", "Sin"} <= ops  # SiLU, RMSNorm, GQA, RoPE

