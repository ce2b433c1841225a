"""The plan: every cell once, with keys that change exactly when the outcome could."""

from __future__ import annotations

from pathlib import Path

import yaml

import models
from harness.config import load_matrix
from harness.modelstore import prepare_zoo_model
from harness.plan import make_plan

CONFIG = {
    "toolchains": [{"id": "a", "kind": "pypi", "version": "3.0.0"}, {"id": "b", "kind": "pypi", "version": "3.6.1"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
                 {"id": "fp32-strict", "flags": [], "tolerance": {"max_abs_ratio": 0.0001}},
                 {"id": "wq8", "flags": ["--weightQuantBits", "8"], "memory": ["normal", "low"],
                  "tolerance": {"max_abs_ratio": 0.05}}],
    "models": [{"name": "micro-conv", "variants": ["fp32", "fp32-strict", "wq8"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 3},
}


def plan_for(tmp_path: Path, config: dict, identities: dict | None = None):
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(config))
    matrix = load_matrix(path, set(models.ZOO), set(models.TAGS))
    model = prepare_zoo_model(models.ZOO["micro-conv"], tmp_path / "models")
    variants = {"micro-conv": config["models"][0]["variants"]}
    return make_plan(matrix, identities or {"a": "id-a", "b": "id-b"}, {"micro-conv": model}, variants)


def test_every_cell_once_even_for_variants_with_the_same_flags(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, CONFIG)
    assert len(plan.conversions) == 2 * 3
    assert len(plan.cells) == 2 * 2 * 2 * (1 + 1 + 2)  # converters x runtimes x APIs x (memory modes per variant)
    assert len({c.key for c in plan.conversions}) == len(plan.conversions)
    assert len({c.key for c in plan.cells}) == len(plan.cells)


def test_keys_follow_what_decides_an_outcome(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, CONFIG)
    assert plan_for(tmp_path, CONFIG).id == plan.id
    upgraded = plan_for(tmp_path, CONFIG, {"a": "id-a", "b": "id-b2"})  # toolchain b is now another build
    assert {c.key for c in upgraded.conversions if c.converter == "a"} == {
        c.key for c in plan.conversions if c.converter == "a"}
    assert {c.key for c in upgraded.cells if "b" not in (c.converter, c.runtime)} == {
        c.key for c in plan.cells if "b" not in (c.converter, c.runtime)}
    assert not {c.key for c in upgraded.cells if "b" in (c.converter, c.runtime)} & {c.key for c in plan.cells}
    looser = {**CONFIG, "variants": [{**CONFIG["variants"][0], "tolerance": {"max_abs_ratio": 0.01}},
                                     *CONFIG["variants"][1:]]}
    changed = plan_for(tmp_path, looser)
    assert {c.key for c in changed.conversions} == {c.key for c in plan.conversions}  # same conversions
    assert {c.key for c in changed.cells if c.variant != "fp32"} == {c.key for c in plan.cells if c.variant != "fp32"}
    assert not {c.key for c in changed.cells if c.variant == "fp32"} & {c.key for c in plan.cells}


def test_keys_follow_the_limits_that_decide_timeouts_and_out_of_memory(tmp_path: Path) -> None:
    """A stored timeout or out-of-memory verdict holds only under the limits it was reached with."""
    plan = plan_for(tmp_path, CONFIG)
    slower = plan_for(tmp_path, {**CONFIG, "run": {**CONFIG["run"], "timeouts": {"convert_s": 600, "run_s": 30}}})
    assert not {c.key for c in slower.conversions} & {c.key for c in plan.conversions}
    larger = plan_for(tmp_path, {**CONFIG, "run": {**CONFIG["run"], "memory_limit_mb": 12345}})
    assert not {c.key for c in larger.cells} & {c.key for c in plan.cells}
    assert not {c.key for c in larger.conversions} & {c.key for c in plan.conversions}
    runs_longer = plan_for(tmp_path, {**CONFIG, "run": {**CONFIG["run"], "timeouts": {"run_s": 30}}})
    assert {c.key for c in runs_longer.conversions} == {c.key for c in plan.conversions}  # runs only
    assert not {c.key for c in runs_longer.cells} & {c.key for c in plan.cells}


def test_keys_follow_the_code_that_decides_a_cell_and_nothing_else(tmp_path: Path, monkeypatch) -> None:
    from harness import plan

    root = Path(plan.__file__).parent
    assert all((root / name).is_file() for name in plan.CELL_CODE)
    before = plan_for(tmp_path, CONFIG)
    monkeypatch.setattr(plan, "CELL_CODE", (*plan.CELL_CODE, "cli.py"))  # as if the CLI decided verdicts
    assert {c.key for c in plan_for(tmp_path, CONFIG).cells}.isdisjoint({c.key for c in before.cells})
    monkeypatch.undo()
    assert [c.key for c in plan_for(tmp_path, CONFIG).cells] == [c.key for c in before.cells]
    assert not {"cli.py", "report", "history.py"} & set(plan.CELL_CODE)  # editing them keeps a run resumable


def test_two_models_of_one_onnx_file_have_cells_of_their_own(tmp_path: Path) -> None:
    """qwen2-prefill and qwen2-decode share their ONNX file and differ in their inputs: neither's cells may stand
    for the other's (they once did, and the decode step was reported as a second prefill)."""
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    matrix = load_matrix(path, set(models.ZOO), set(models.TAGS))
    prefill, decode = (prepare_zoo_model(models.ZOO[name], tmp_path / "models")
                       for name in ("qwen2-prefill", "qwen2-decode"))
    assert prefill.sha256 == decode.sha256 and prefill.inputs_digest() != decode.inputs_digest()
    plan = make_plan(matrix, {"a": "id-a", "b": "id-b"}, {"qwen2-prefill": prefill, "qwen2-decode": decode},
                     {"qwen2-prefill": ["fp32"], "qwen2-decode": ["fp32"]})
    assert len({c.key for c in plan.conversions}) == len(plan.conversions) == 2 * 2
    assert len({c.key for c in plan.cells}) == len(plan.cells) == 2 * 2 * 2 * 2
