"""One matrix run, start to finish: config -> models -> toolchains -> plan -> cells -> results."""

from __future__ import annotations

import os
import platform
import re
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

import models as zoo
from harness import __version__
from harness.config import ConfigError, Matrix, load_matrix
from harness.journal import Journal
from harness.modelstore import PreparedModel, prepare_user_model, prepare_zoo_model
from harness.plan import digest, harness_digest, make_plan
from harness.progress import Progress
from harness.records import ModelRecord, Results, RunInfo, ToolchainRecord, VariantRecord
from harness.runner import Runner
from harness.toolchains import ProvisionError, Toolchain, make_toolchain
from harness.workers import Worker, WorkerLost, WorkerStartError
from harness.workspace import Workspace

FLAG = re.compile(r"^\s+(?:-\w, )?(--[A-Za-z][\w-]*)", re.MULTILINE)


@dataclass(frozen=True)
class Selection:
    """Narrowing of the matrix from the command line; empty means everything in the file."""

    toolchains: tuple[str, ...] = ()
    converters: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # zoo names or tags, or paths of the user's .onnx files
    variants: tuple[str, ...] = ()
    apis: tuple[str, ...] = ()
    inputs: Path | None = None  # the user's inputs (.npz) for their model
    dims: Mapping[str, int] = field(default_factory=dict)

    @property
    def narrowed(self) -> bool:
        return any((self.toolchains, self.converters, self.runtimes, self.models, self.variants, self.apis))

    @property
    def user_models(self) -> list[Path]:
        return [Path(m) for m in self.models if is_model_path(m)]


def is_model_path(value: str) -> bool:
    return value.endswith(".onnx") or os.sep in value or Path(value).is_file()


def load(config: Path, selection: Selection) -> Matrix:
    """The matrix file, validated, then narrowed by the selection."""
    matrix = load_matrix(config, set(zoo.ZOO), set(zoo.TAGS))
    return narrow(matrix, selection)


def narrow(matrix: Matrix, selection: Selection) -> Matrix:
    """Keep the toolchains, roles and APIs the selection names; check every name it uses."""
    toolchain_ids = [t.id for t in matrix.toolchains]
    variant_ids = [v.id for v in matrix.variants]
    problems = []
    for option, values, known in (("--toolchain", selection.toolchains, toolchain_ids),
                                  ("--converter", selection.converters, toolchain_ids),
                                  ("--runtime", selection.runtimes, toolchain_ids),
                                  ("--variant", selection.variants, variant_ids)):
        problems += [f"{option} {v}: not in the matrix (known: {', '.join(known)})" for v in values if v not in known]
    for name in selection.models:
        if not is_model_path(name) and name not in zoo.ZOO and name not in zoo.TAGS:
            problems.append(f"--model {name}: no zoo model or tag of that name, and not a path to an .onnx file")
    if problems:
        raise ConfigError(problems)

    toolchains = [t for t in matrix.toolchains if not selection.toolchains or t.id in selection.toolchains]
    kept = {t.id for t in toolchains}
    converters = [t for t in matrix.converter_ids if t in kept and t in (selection.converters or kept)]
    runtimes = [t for t in matrix.runtime_ids if t in kept and t in (selection.runtimes or kept)]
    return matrix.model_copy(update={
        "toolchains": [t for t in toolchains if t.id in converters or t.id in runtimes],
        "converters": converters, "runtimes": runtimes,
        "run": matrix.run.model_copy(update={"apis": list(selection.apis) or matrix.run.apis})})


def model_variants(matrix: Matrix, selection: Selection) -> dict[str, list[str]]:
    """The zoo models to run and each one's variants (file order, merged over selections naming it)."""
    picks = {m for m in selection.models if not is_model_path(m)}
    if selection.models and not picks:
        return {}  # only the user's own models
    variants: dict[str, list[str]] = {}
    for chosen in matrix.models:
        names = [chosen.name] if chosen.name else sorted(n for n, s in zoo.ZOO.items() if chosen.tag in s.tags)
        for name in names:
            if picks and name not in picks and not picks & set(zoo.ZOO[name].tags):
                continue
            merged = variants.setdefault(name, [])
            merged += [v for v in chosen.variants
                       if v not in merged and (not selection.variants or v in selection.variants)]
    return {name: found for name, found in variants.items() if found}


def prepare_models(matrix: Matrix, selection: Selection, workspace: Workspace,
                   progress: Progress) -> tuple[dict[str, PreparedModel], dict[str, list[str]]]:
    """Build (or reuse) every selected zoo model and check the user's models, before any MNN work."""
    wanted = model_variants(matrix, selection)
    user_variants = list(selection.variants) or [v.id for v in matrix.variants]
    prepared, variants = {}, {}
    with progress.task("models", total=len(wanted) + len(selection.user_models)) as advance:
        for path in selection.user_models:
            model = prepare_user_model(path, workspace.models, selection.inputs, selection.dims)
            prepared[model.name], variants[model.name] = model, user_variants
            advance()
        for name, model_variants_ in wanted.items():
            prepared[name], variants[name] = prepare_zoo_model(zoo.ZOO[name], workspace.models), model_variants_
            advance()
    return prepared, variants


def provision(matrix: Matrix, workspace: Workspace,
              progress: Progress) -> tuple[dict[str, Toolchain], list[ToolchainRecord]]:
    """Make every toolchain ready, in parallel; one that cannot be made ready is recorded, not fatal."""
    toolchains = {spec.id: make_toolchain(spec, workspace) for spec in matrix.toolchains}
    with progress.task("toolchains", total=len(toolchains)) as advance, \
            ThreadPoolExecutor(max(1, len(toolchains))) as pool:
        def ready(toolchain: Toolchain) -> ToolchainRecord:
            roles = [role for role, ids in (("convert", matrix.converter_ids), ("run", matrix.runtime_ids))
                     if toolchain.id in ids]
            record = _ready(toolchain, roles)
            advance()
            return record
        records = list(pool.map(ready, toolchains.values()))
    usable = {r.id: toolchains[r.id] for r in records if r.status == "ok"}
    return usable, records


def _ready(toolchain: Toolchain, roles: list[str]) -> ToolchainRecord:
    spec = toolchain.spec
    base = dict(id=spec.id, kind=spec.kind, version=spec.version, roles=roles)
    try:
        provenance = toolchain.provision()
        with tempfile.TemporaryDirectory(prefix="mnnm-") as scratch:
            worker = Worker(toolchain, Path(scratch), "describe")
            try:
                reply = worker.request({"op": "describe"}, timeout=120)
            finally:
                worker.close()
    except ProvisionError as error:
        return ToolchainRecord(**base, status="unavailable", reason=error.reason, log_tail=error.log_tail)
    except (WorkerStartError, WorkerLost) as error:
        return ToolchainRecord(**base, status="unavailable", reason=f"the worker does not run: {error}",
                               log_tail=getattr(error, "log_tail", ""))
    if reply.header["mnn_version"] != spec.version:
        return ToolchainRecord(**base, status="unavailable", provenance=provenance,
                               reason=f"imports MNN {reply.header['mnn_version']}, not {spec.version}")
    flags = sorted(set(FLAG.findall(reply.header["log"])))
    return ToolchainRecord(**base, status="ok", provenance={**provenance, **{
        k: reply.header[k] for k in ("mnn_version", "numpy_version", "python", "platform")}}, converter_flags=flags)


def host_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor())
    return {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
            "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def run_matrix(config: Path, selection: Selection, workspace: Workspace, jobs: int, fresh: bool,
               progress: Progress, worker_requests: int = 2000) -> Results:
    """Run the whole matrix (resuming an interrupted run of the same plan) and return its results.

    `worker_requests` is how many requests a worker serves before it is replaced (1: a process per cell).
    """
    started, clock = datetime.now(timezone.utc), time.monotonic()
    matrix = load(config, selection)
    models, variants = prepare_models(matrix, selection, workspace, progress)
    toolchains, toolchain_records = provision(matrix, workspace, progress)
    identities = {r.id: digest(r.provenance) for r in toolchain_records if r.status == "ok"}
    plan = make_plan(matrix, identities, models, variants)
    journal = Journal(workspace.run, plan.id, fresh=fresh)
    flags = {r.id: r.converter_flags for r in toolchain_records}
    runner = Runner(toolchains, models, matrix, journal, jobs, flags, worker_requests)
    try:
        todo = [c for c in plan.conversions if c.key not in journal.conversions]
        with progress.task("convert", total=len(plan.conversions), done=len(plan.conversions) - len(todo)) as advance:
            runner.execute(todo, runner.convert, lambda record: advance(record.outcome.verdict))
        todo_cells = [c for c in plan.cells if c.key not in journal.cells]
        with progress.task("run", total=len(plan.cells), done=len(plan.cells) - len(todo_cells)) as advance:
            runner.execute(todo_cells, runner.run, lambda record: advance(record.outcome.verdict))
    finally:
        runner.close()
    journal.complete()
    return Results(
        run=RunInfo(started=started.isoformat(timespec="seconds"),
                    finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    duration_s=round(time.monotonic() - clock, 3), phases=dict(progress.durations), jobs=jobs,
                    resumed_cells=journal.resumed,
                    selection=_selection_record(config, selection),
                    harness={"version": __version__, "digest": harness_digest()}),
        host=host_info(), settings=matrix.run.model_dump(),
        toolchains=toolchain_records,
        models=[ModelRecord(name=m.name, sha256=m.sha256, source=m.source, tags=list(m.tags), guards=m.guards,
                            inputs=m.inputs, outputs=list(m.outputs)) for m in models.values()],
        variants=[VariantRecord(id=v.id, flags=v.flags, tolerance=v.tolerance.model_dump(exclude_none=True),
                                description=v.description) for v in matrix.variants],
        conversions=[journal.conversions[c.key] for c in plan.conversions],
        cells=[journal.cells[c.key] for c in plan.cells])


def _selection_record(config: Path, selection: Selection) -> dict:
    return {"config": str(config), "narrowed": selection.narrowed,
            **{k: list(v) for k, v in vars(selection).items() if isinstance(v, tuple) and v},
            **({"dims": dict(selection.dims)} if selection.dims else {}),
            **({"inputs": str(selection.inputs)} if selection.inputs else {})}

