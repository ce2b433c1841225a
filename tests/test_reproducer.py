"""Reproducer bundles: extract one, run its script, get the same verdict."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from harness.matrix import run_matrix
from harness.progress import Progress
from harness.selection import Selection
from harness.workspace import Workspace

CONFIG = {
    "toolchains": [{"id": "pypi-3.0.0", "kind": "pypi", "version": "3.0.0"},
                   {"id": "pypi-3.6.1", "kind": "pypi", "version": "3.6.1"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
                 {"id": "fp16-exact", "flags": ["--fp16"], "tolerance": {"max_abs_ratio": 1e-12}},
                 *({"id": f"ptq-{method.lower()}", "quantize": {"feature": method, "samples": 4},
                    "tolerance": {"min_cosine": 0.99, "max_rel_l2": 0.15}} for method in ("KL", "EMA", "ADMM"))],
    "models": [{"name": "micro-silu", "variants": ["fp32"]},  # unsupported-op
               {"name": "micro-input-identity-cast", "variants": ["fp32"]},  # crash, load-error
               {"name": "micro-shape-start-end", "variants": ["fp32"]},  # wrong-shape
               {"name": "micro-constant-of-shape-default", "variants": ["fp32"]},  # nondeterministic (converter)
               {"name": "micro-conv", "variants": ["fp16-exact"]},  # wrong-output
               {"name": "seq-gru", "variants": ["ptq-kl", "ptq-ema", "ptq-admm"]}],  # quantization, each its own
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    (root / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))
    run_matrix(root / "matrix.yaml", Selection(), Workspace(root / "ws", shared_envs=workspace.envs), jobs=2,
               fresh=True, progress=Progress(quiet=True), reproducers=root / "bundles")
    return root / "bundles"


def reproduce(archive: Path, into: Path, toolchains) -> tuple[dict, list[str], str]:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    [bundle] = into.iterdir()
    cell = json.loads((bundle / "cell.json").read_text())
    env = {**os.environ, "CONVERTER_PYTHON": str(toolchains[cell["converter"][5:]].python),
           "RUNTIME_PYTHON": str(toolchains[cell["runtime"][5:]].python)}
    done = subprocess.run(["sh", "reproduce.sh"], cwd=bundle, env=env, capture_output=True, text=True, timeout=300)
    return cell, re.findall(r"^VERDICT (\S+)", done.stdout, re.MULTILINE), done.stdout


@pytest.mark.parametrize("name", [
    "micro-silu--fp32--pypi-3.6.1--to--pypi-3.0.0",  # unsupported-op (SiLU as a Unary op)
    "micro-input-identity-cast--fp32--pypi-3.0.0--to--pypi-3.0.0",  # crash (module) and load-error (session)
    "micro-conv--fp16-exact--pypi-3.0.0--to--pypi-3.6.1",  # wrong-output under an impossible tolerance
    "seq-gru--ptq-kl--pypi-3.6.1--to--pypi-3.0.0",  # the quantization tool crashes
])
def test_a_bundle_reproduces_the_recorded_verdict(bundles: Path, name: str, tmp_path: Path, toolchains) -> None:
    cell, verdicts, output = reproduce(bundles / f"{name}.tar.gz", tmp_path, toolchains)
    recorded = [r["verdict"] for r in cell["recorded"]]
    if cell["stage"] in ("convert", "quantize"):  # one conversion, shared by every run of the pairing
        assert verdicts == [recorded[0]], output
    else:
        assert verdicts == [r["verdict"] for r in sorted(cell["recorded"], key=lambda r: (r["api"], r["memory"]))], \
            output


def test_every_bundle_prints_the_verdicts_of_its_cells(bundles: Path, tmp_path: Path, toolchains) -> None:
    """Every verdict kind the run gave, every quantization variant of one model: the bundle's judge is the table's."""
    wrong, kinds = [], set()
    for archive in sorted(bundles.glob("*.tar.gz")):
        cell, verdicts, output = reproduce(archive, tmp_path / archive.name.removesuffix(".tar.gz"), toolchains)
        ordered = sorted(cell["recorded"], key=lambda r: (r["api"], r["memory"]))
        recorded = [ordered[0]["verdict"]] if cell["stage"] in ("convert", "quantize") else [
            r["verdict"] for r in ordered]
        kinds.update(recorded)
        if verdicts != recorded:
            wrong.append(f"{archive.name}: printed {verdicts}, recorded {recorded}\n{output[-1500:]}")
    assert not wrong, "\n".join(wrong)
    assert {"unsupported-op", "crash", "load-error", "wrong-shape", "nondeterministic", "wrong-output"} <= kinds


def test_each_quantization_bundle_carries_its_own_calibration(bundles: Path) -> None:
    for method in ("KL", "EMA", "ADMM"):
        carried = [bundle for bundle in bundles.glob(f"seq-gru--ptq-{method.lower()}--*")
                   if bundle.is_dir() and (bundle / "calibration").exists()]
        assert carried, f"no ptq-{method.lower()} bundle with calibration"
        for bundle in carried:
            config = json.loads((bundle / "calibration" / "config.json").read_text())
            assert config["feature_quantize_method"] == method, bundle.name


def test_a_bundle_has_what_an_upstream_report_needs(bundles: Path) -> None:
    bundle = bundles / "micro-silu--fp32--pypi-3.6.1--to--pypi-3.0.0"
    for name in ("model.onnx", "inputs.npz", "expected.npz", "converted.mnn", "reproduce.sh", "README.md"):
        assert (bundle / name).exists(), name
    spec = json.loads((bundle / "mnn-test" / "input.json").read_text())
    assert spec["inputs"] == [{"name": "x", "shape": [1, 64, 32]}] and spec["outputs"] == ["y"]
    assert len((bundle / "mnn-test" / "x.txt").read_text().split()) == 64 * 32
    assert "unsupported-op" in (bundle / "README.md").read_text()
    assert not (bundles / "micro-silu--fp32--pypi-3.0.0--to--pypi-3.6.1").exists(), "passing cells get no bundle"
