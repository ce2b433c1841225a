"""Reproducer bundles: everything needed to reproduce one failure with MNN alone, ready to attach to an
upstream bug report. One bundle per failing (converter, runtime, model, variant): the model, its inputs
and expected outputs (also in MNN's own test-directory layout), the converter flags, the converted
model, and `reproduce.sh`, which sets up the same toolchains and prints the same verdicts."""

from __future__ import annotations

import functools
import json
import re
import shutil
import tarfile
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from pathlib import Path

import jinja2
import yaml

from harness import judge
from harness.calibration import calibration_dir
from harness.mnnfiles import write_test_dir
from harness.modelstore import PreparedModel
from harness.plan import harness_digest
from harness.records import CellRecord, ConversionRecord, Results, ToolchainRecord, Verdict
from harness.report.markdown import environment
from harness.store import converted_path
from harness.supervisor import WORKER_ENVIRONMENT, WORKER_SCRIPT
from harness.tasks import QUANTIZE_ATTEMPTS
from harness.verdicts import PATTERNS_FILE

BUNDLE_FILES = Path(__file__).with_name("bundle")
JUDGE = Path(judge.__file__)


def bundled(tags: Iterable[str], models_named: bool) -> bool:
    """Whether a run bundles a model's failures: a run that names its models (`--model`) all of theirs, a full run
    all but the real family's (megabytes each, thousands of failing cells)."""
    return models_named or "real" not in tags


def bundle_id(cell: CellRecord) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{cell.model}--{cell.variant}--{cell.converter}--to--{cell.runtime}")


def failing_groups(results: Results, models: Container[str] | None = None) -> dict[str, list[CellRecord]]:
    """The cells of each (converter, runtime, model, variant) with a failure, by bundle id (of `models` only, if
    given)."""
    groups: dict[str, list[CellRecord]] = defaultdict(list)
    for cell in results.cells:
        if models is None or cell.model in models:
            groups[bundle_id(cell)].append(cell)
    return {key: cells for key, cells in groups.items()
            if any(c.outcome.verdict not in (Verdict.PASS, Verdict.NOT_RUN) for c in cells)}


def write_bundles(results: Results, groups: dict[str, list[CellRecord]], models: dict[str, PreparedModel],
                  store: Path, out: Path, advance: Callable[[], None] = lambda: None) -> list[Path]:
    """A bundle (directory and .tar.gz) for each of `failing_groups`: one per converter, runtime, model and
    variant with a failure."""
    archives: list[Path] = []
    test_dirs: dict[str, Path] = {}
    conversions = {(c.converter, c.model, c.variant): c for c in results.conversions}
    for key, cells in groups.items():
        archives.append(write_bundle(results, cells, models[cells[0].model], store, out / key, test_dirs,
                                     conversions))
        advance()
    return archives


def write_bundle(results: Results, cells: list[CellRecord], model: PreparedModel, store: Path, target: Path,
                 test_dirs: dict[str, Path], conversions: dict[tuple[str, str, str], ConversionRecord]) -> Path:
    """Write one bundle into `target` (replacing it) and pack it as `target`.tar.gz; returns the archive.
    `test_dirs` remembers each model's MNN test directory, written once and copied after; `conversions` are the
    run's by (converter, model, variant)."""
    first = cells[0]
    conversion = conversions[first.converter, first.model, first.variant]
    toolchains = {t.id: t for t in results.toolchains}
    variant = next(v for v in results.variants if v.id == first.variant)
    cell = {
        "title": f"{first.model} ({first.variant}) converted by {first.converter}, run by {first.runtime}",
        "converter": first.converter, "runtime": first.runtime, "model": first.model, "variant": first.variant,
        "flags": conversion.flags, "quantize": conversion.quantize, "inputs": list(model.inputs),
        "outputs": list(model.outputs), "apis": sorted({c.api for c in cells}),
        "memory": sorted({c.memory for c in cells}),
        "settings": {k: results.settings[k] for k in ("threads", "precision", "repeat")},
        "environment": WORKER_ENVIRONMENT,
        "attempts": {"convert": 2, "quantize": QUANTIZE_ATTEMPTS},
        "tolerance": model.tolerance or variant.tolerance, "stage": conversion.outcome.stage
        if conversion.outcome.verdict != Verdict.PASS else "run",
        "recorded": [{"api": c.api, "memory": c.memory, "verdict": c.outcome.verdict.value, "stage": c.outcome.stage,
                      "reason": c.outcome.reason, "log_excerpt": c.outcome.log_excerpt} for c in cells],
        "toolchains": {t: toolchains[t].model_dump(include={"id", "kind", "version", "provenance"})
                       for t in (first.converter, first.runtime)},
        "conversion": conversion.key, "harness": harness_digest(),  # what its model and every shipped file came from
    }
    described = json.dumps(cell, indent=1)
    archive = target.with_name(target.name + ".tar.gz")
    if archive.exists() and (target / "cell.json").is_file() and (target / "cell.json").read_text() == described:
        return archive  # the same cells, judged the same, by the same toolchains: written by an earlier run
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(model.onnx_path, target / "model.onnx")
    shutil.copy(Path(model.directory) / "inputs.npz", target / "inputs.npz")
    shutil.copy(Path(model.directory) / "reference.npz", target / "expected.npz")
    if model.name in test_dirs and test_dirs[model.name].is_dir():
        shutil.copytree(test_dirs[model.name], target / "mnn-test")
    else:
        test_dirs[model.name] = write_test_dir(target / "mnn-test", model.load_inputs(), model.load_reference())
    converted = converted_path(store, conversion.key)
    if conversion.outcome.verdict == Verdict.PASS and converted.exists():
        shutil.copy(converted, target / "converted.mnn")
    if conversion.quantize:
        samples = calibration_dir(store, model, conversion.quantize)
        if (samples / "config.json").exists():
            shutil.copytree(samples, target / "calibration")
    shutil.copy(WORKER_SCRIPT, target / "worker.py")
    shutil.copy(JUDGE, target / "judge.py")
    shutil.copy(BUNDLE_FILES / "reproduce.py", target / "reproduce.py")
    if (target / "converted.mnn").exists():  # what the matrix saw of the tool's stability travels with its model
        (target / "conversion.json").write_text(json.dumps({"differs": conversion.reconversion_differs}))
    (target / "patterns.json").write_text(_patterns_json())
    (target / "cell.json").write_text(described)
    context = dict(cell=cell, title=cell["title"], stage=cell["stage"], needs_docker=any(
        toolchains[t].kind != "pypi" for t in (first.converter, first.runtime)),
        converter=_shell(toolchains[first.converter]), runtime=_shell(toolchains[first.runtime]))
    script = target / "reproduce.sh"
    script.write_text(_template("reproduce.sh.j2").render(**context))
    script.chmod(0o755)
    (target / "README.md").write_text(_template("README.md.j2").render(**context))
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:  # level 9 took three quarters of the time
        tar.add(target, arcname=target.name)
    return archive


@functools.cache
def _patterns_json() -> str:
    return json.dumps(yaml.safe_load(PATTERNS_FILE.read_text()), indent=1)


@functools.cache
def _template(name: str) -> jinja2.Template:
    return environment().from_string((BUNDLE_FILES / name).read_text())


def _shell(toolchain: ToolchainRecord) -> dict:
    return {"id": toolchain.id, "kind": toolchain.kind, "version": toolchain.version,
            "image": toolchain.provenance.get("image", "")}
