"""The real family, prepared: exported in the exporter venv (cached), checked by onnxruntime against torch, stored.

Each model lives in `<workspace>/models/<name>/` like a zoo model, but its reference is the torch eager output
(`reference.npz`, written by the export script). onnxruntime's opinion of the exported graph is recorded beside
it in `PreparedModel.onnxruntime`; a model onnxruntime disagrees with keeps torch's reference, and is flagged.
A rerun whose recipe (exporter venv, export script, spec, seed, onnxruntime) is unchanged exports nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from harness import exporter_env as exporters
from harness.modelstore import PreparedModel
from harness.workspace import Workspace
from models.graph import run_onnxruntime
from models.real import RealSpec

AGREES = 1e-4  # onnxruntime agrees with torch when max |ort - torch| <= AGREES * max(1, max |torch|), every output


@dataclass(frozen=True)
class FailedExport:
    """A real model with no ONNX file (the exporter failed, or its venv could not be made): kept in the results'
    `excluded` list, like a node case that does not run."""

    name: str
    op: str  # the architecture
    reason: str
    rule: str = "export-failed"


@dataclass
class RealModels:
    """The prepared real models, and those that have none (the exporter's or the venv's error, by name)."""

    models: dict[str, PreparedModel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def prepare_real_models(specs: list[RealSpec], workspace: Workspace,
                        say: Callable[[str], None] = lambda _message: None) -> RealModels:
    """Export the specs not cached (one exporter process for all), check them, and return every one's outcome."""
    root = workspace.models
    env = exporters.exporter_env(workspace)
    recipes = {spec.name: recipe(spec) for spec in specs}
    pending = [spec for spec in specs if _cached(root / spec.name, recipes[spec.name]) is None]
    outcome = RealModels()
    if pending:
        try:
            env.ensure()
            say(f"exporting {len(pending)} real models with torch.onnx.export ({env.directory})")
            jobs = [{"arch": s.arch, "exporter": s.exporter, "opset": s.opset, "seed": s.seed,
                     "out": str(_fresh(root / s.name))} for s in pending]
            env.export(jobs, root / "real-export.log")
            for spec in pending:
                _finish(spec, root / spec.name, recipes[spec.name])
        except exporters.ExporterEnvError as error:  # only the pending ones fail: those exported before stand
            say(f"real models not exported: {error.reason}")
            outcome.failed.update({spec.name: f"exporter venv: {error.reason}" for spec in pending})
    for spec in specs:
        if spec.name in outcome.failed:
            continue
        cached = _cached(root / spec.name, recipes[spec.name])
        if isinstance(cached, PreparedModel):
            outcome.models[spec.name] = cached
            if cached.onnxruntime != "agrees":
                say(f"{spec.name}: onnxruntime {cached.onnxruntime} (the reference stays torch's output)")
        else:
            outcome.failed[spec.name] = cached or "the exporter wrote nothing (see models/real-export.log)"
    return outcome


def recipe(spec: RealSpec) -> str:
    """What an export depends on: the exporter venv's pins, the export script, the spec, the onnxruntime judging it."""
    payload = [exporters.identity(), exporters.EXPORT_SCRIPT.read_text(), asdict(spec), onnxruntime.__version__,
               np.__version__, AGREES]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def onnxruntime_opinion(path: Path, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> str:
    """onnxruntime's output against torch's: "agrees", "disagrees: <max abs diff> on <output>" or "cannot run: ..."."""
    try:
        got = run_onnxruntime(path, inputs)
    except Exception as error:
        return f"cannot run: {(str(error).strip().splitlines() or [type(error).__name__])[0][:300]}"
    if set(got) != set(reference):
        return f"disagrees: outputs {sorted(got)}, torch gave {sorted(reference)}"
    worst, where, bound = 0.0, "", 0.0
    for name, expected in reference.items():
        if got[name].shape != expected.shape:
            return f"disagrees: {name} has shape {list(got[name].shape)}, torch gave {list(expected.shape)}"
        diff = float(np.max(np.abs(got[name].astype(np.float64) - expected), initial=0.0))
        scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        if not np.isfinite(diff) or diff / scale > worst:
            worst, where, bound = (np.inf if not np.isfinite(diff) else diff / scale), name, diff
    return "agrees" if worst <= AGREES else f"disagrees: {bound:.3g} max abs on {where}"


def _finish(spec: RealSpec, directory: Path, key: str) -> None:
    """Judge one export and write `meta.json` (a model) or `failed.json` (why there is none), last."""
    done = json.loads((directory / "export.json").read_text()) if (directory / "export.json").exists() else {}
    if "error" in done or not (directory / "model.onnx").exists():
        reason = done.get("error", "the exporter stopped before this model (see models/real-export.log)")
        (directory / "failed.json").write_text(json.dumps({"recipe": key, "error": f"{spec.exporter}: {reason}"}))
        return
    path = directory / "model.onnx"
    graph = onnx.load(str(path)).graph
    wanted = [i.name for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    with np.load(directory / "inputs.npz") as data:
        inputs = {name: data[name] for name in wanted if name in data.files}  # exporters may drop unused inputs
    with np.load(directory / "reference.npz") as data:
        reference = {name: data[name] for name in data.files}
    model = PreparedModel(
        name=spec.name, directory=str(directory), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        source=f"torch {done['torch']} {spec.exporter} opset {done['opset']}", tags=spec.tags, guards=spec.guards,
        inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
        outputs=tuple(reference), recipe=key, onnxruntime=onnxruntime_opinion(path, inputs, reference))
    (directory / "meta.json").write_text(json.dumps(asdict(model), indent=2))


def _cached(directory: Path, key: str) -> PreparedModel | str | None:
    """The model stored under this recipe, or why it has none, or None when it was not exported under it."""
    if (directory / "meta.json").exists():
        model = PreparedModel.read(directory)
        return model if model.recipe == key else None
    if (directory / "failed.json").exists():
        failed = json.loads((directory / "failed.json").read_text())
        return failed["error"] if failed["recipe"] == key else None
    return None


def _fresh(directory: Path) -> Path:
    """A model's directory, emptied of what says an export is done (so a stopped export is never taken)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("meta.json", "failed.json", "export.json", "model.onnx"):
        (directory / name).unlink(missing_ok=True)
    return directory
