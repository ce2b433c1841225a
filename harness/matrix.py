"""One matrix run, start to finish: config -> models -> toolchains -> plan -> cells -> results."""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from harness import __version__, provisioning
from harness.config import Matrix, load_matrix
from harness.history import keep as keep_history
from harness.merge import in_order
from harness.opsupport import coverage, op_support
from harness.plan import Cell, Plan, digest, harness_digest, make_plan
from harness.pool import WorkerPool
from harness.progress import Progress
from harness.records import CellRecord, ConversionRecord, ExcludedCase, ModelRecord, Results, RunInfo, VariantRecord
from harness.report import no_cycle_collection, write_results
from harness.reproducer import bundled, failing_groups, write_bundles
from harness.runner import Runner
from harness.selection import Selection, narrow
from harness.store import Store
from harness.suites import CATALOG, CATALOG_TAGS, SUITES, ZOO, Suite
from harness.tasks import Tasks
from harness.workspace import Workspace


def load(config: Path, selection: Selection, suite: Suite = ZOO) -> Matrix:
    """The matrix file, validated, then narrowed by the selection."""
    return narrow(load_matrix(config, set(CATALOG), set(CATALOG_TAGS)), selection, suite.selection_problems(selection))


def run_matrix(config: Path, selection: Selection, workspace: Workspace, jobs: int, fresh: bool,
               progress: Progress, suite: Suite | str = ZOO, worker_requests: int = 2000,
               reproducers: Path | None = None, target: Path | None = None) -> Results | None:
    """Run one suite of the matrix and return its results, or None if the documents a run of the same plan wrote
    to `target` are all still there (nothing to do). Conversions and runs already in the store are reused unless
    `fresh`: an interrupted run resumes, and identical converted models run once per runtime.

    `worker_requests` is how many requests a worker serves before it is replaced (1: a process per cell).
    With `reproducers`, a reproducer bundle for every failing cell is written there.
    """
    started, clock = datetime.now(timezone.utc), time.monotonic()
    suite = SUITES[suite] if isinstance(suite, str) else suite
    if suite.run is not None:  # a suite with a run of its own (llm)
        return suite.run(config, selection, workspace, jobs, fresh, progress, reproducers, target)
    matrix = load(config, selection, suite)
    chosen = suite.models(matrix, selection, workspace, progress)
    toolchains, toolchain_records = provisioning.ready_toolchains(matrix, workspace, progress)
    identities = {r.id: digest(r.provenance) for r in toolchain_records if r.status == "ok"}
    plan = make_plan(matrix, identities, chosen.models, chosen.variants)
    if selection.shard:
        plan = plan.shard(*selection.shard)
    store = Store(workspace.store, started.isoformat(timespec="seconds"), fresh)
    if target is not None and store.current(target, plan_id(plan.id, reproducers)):
        store.close()
        return None
    pool = WorkerPool(toolchains, matrix.run.memory_limit_mb, worker_requests)
    tasks = Tasks(pool, chosen.models, matrix, store, {r.id: r.converter_flags for r in toolchain_records})
    runner = Runner(jobs)
    try:
        conversions = convert(plan, tasks, store, runner, progress)
        cells, reused = run_cells(plan, tasks, store, runner, progress)
    finally:
        pool.close()
        store.close()
    excluded = [ExcludedCase(name=c.name, op=c.op, rule=c.rule, reason=c.reason) for c in chosen.excluded]
    ops = op_support(cells, chosen.models, toolchain_records, excluded) if suite.op_support else []
    used_variants = {v for names in chosen.variants.values() for v in names}
    results = Results(
        suite=suite.name,
        run=RunInfo(started=started.isoformat(timespec="seconds"),
                    finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    duration_s=round(time.monotonic() - clock, 3), phases=dict(progress.durations), jobs=jobs,
                    resumed_cells=reused, plan=plan_id(plan.id, reproducers), selection=selection.summary(config),
                    harness={"version": __version__, "digest": harness_digest()}),
        host=host_info(), settings=matrix.run.model_dump(), toolchains=toolchain_records,
        models=[ModelRecord(name=m.name, sha256=m.sha256, source=m.source, tags=list(m.tags), guards=m.guards,
                            inputs=m.inputs, outputs=list(m.outputs), tolerance=m.tolerance,
                            onnxruntime=m.onnxruntime, run_skip=m.run_skip)
                for m in chosen.models.values()],
        variants=[VariantRecord(id=v.id, flags=v.flags, tolerance=v.tolerance.model_dump(exclude_defaults=True),
                                description=v.description) for v in matrix.variants if v.id in used_variants],
        excluded=excluded, conversions=[conversions[c.key] for c in plan.conversions], cells=cells,
        op_support=ops, coverage=coverage(ops, toolchain_records))
    bundles = {name: model for name, model in chosen.models.items() if bundled(model.tags, bool(selection.models))}
    with no_cycle_collection():  # 650,000 new records, none garbage
        results = in_order(results)  # the order `harness merge` gives the shards of this run too
        groups = failing_groups(results, bundles) if reproducers is not None else []
    if reproducers is not None:
        with progress.task("reproducers", total=len(groups)) as advance:
            write_bundles(results, groups, bundles, workspace.store, reproducers, advance)
        results = results.model_copy(update={"run": results.run.model_copy(update={
            "phases": dict(progress.durations), "duration_s": round(time.monotonic() - clock, 3)})})
    return results


def convert(plan: Plan, tasks: Tasks, store: Store, runner: Runner, progress: Progress) -> dict[str, ConversionRecord]:
    """Every conversion of the plan, by key: from the store, or made now and stored."""
    conversions = store.conversions(c.key for c in plan.conversions)
    todo = [c for c in plan.conversions if c.key not in conversions]

    def finished(record: ConversionRecord) -> None:
        store.add_conversion(record)
        conversions[record.key] = record
        advance(record.outcome.verdict)

    with progress.task("convert", total=len(plan.conversions), done=len(plan.conversions) - len(todo)) as advance:
        runner.execute(todo, tasks.convert, finished)
    tasks.conversions = conversions
    return conversions


def run_cells(plan: Plan, tasks: Tasks, store: Store, runner: Runner,
              progress: Progress) -> tuple[list[CellRecord], int]:
    """Every cell's record, and how many came from a run not made for it in this run. Cells whose converted models
    are identical (uuid aside) share one run, made for the first of them in plan order (the oldest converter), or
    found in the store."""
    keys = [cell.run_key(tasks.conversions[cell.conversion.key]) if tasks.needs_run(cell) else None
            for cell in plan.cells]
    groups: dict[str, list[Cell]] = {}
    for cell, key in zip(plan.cells, keys, strict=True):
        if key is not None:
            groups.setdefault(key, []).append(cell)
    runs = {key: (record, f"{record.converter}, {run}") for key, (record, run) in store.runs(groups).items()}
    todo = [group[0] for key, group in groups.items() if key not in runs]
    run_of = {group[0].key: key for key, group in groups.items()}  # the cell that makes each run -> its key
    made_now: set[str] = set()

    def finished(record: CellRecord) -> None:
        key = run_of[record.key]
        store.add_run(key, record)
        runs[key] = (record, record.converter)
        made_now.add(key)
        advance(record.outcome.verdict, len(groups[key]))

    stored = sum(len(groups[key]) for key in runs)
    with progress.task("run", total=len(plan.cells), done=stored) as advance:
        advance(None, len(plan.cells) - sum(map(len, groups.values())))  # cells with no run of their own to make
        runner.execute(todo, tasks.run, finished)
    cells, reused = [], 0
    for cell, key in zip(plan.cells, keys, strict=True):
        if key is None:
            cells.append(tasks.resolve(cell, None))
            continue
        record, origin = runs[key]
        own = key in made_now and record.key == cell.key
        cells.append(tasks.resolve(cell, record, "" if own else origin))
        reused += not own
    return cells, reused


def plan_id(plan: str, reproducers: Path | None) -> str:
    """What a run's documents are made from: its plan's content, the harness that writes them (documents, tables,
    bundles), and whether and where it writes reproducer bundles."""
    return digest(plan, harness_digest(), str(reproducers.resolve()) if reproducers else None)


def run_suite(config: Path, selection: Selection, workspace: Workspace, jobs: int, fresh: bool, progress: Progress,
              suite: Suite, target: Path, reproducers: Path | None = None,
              history: Path | None = None) -> tuple[Results | None, list[Path]]:
    """`nox -s matrix` for one suite: run it and write its documents to `target` (and the run to `history`, if
    given); (None, []) if nothing changed since the run that wrote them."""
    results = run_matrix(config, selection, workspace, jobs, fresh, progress, suite, reproducers=reproducers,
                         target=target)
    if results is None:
        return None, []
    with progress.task("report", total=None):
        written = write_results(results, target) + ([reproducers] if reproducers else [])
        remember_documents(workspace, target, results.run.plan, written)
        if history is not None:
            written.append(keep_history(results, history, written[0]))  # written[0]: the results document
    return results, written


def documents_current(workspace: Workspace, target: Path, plan: str, fresh: bool) -> bool:
    """Whether the documents a run of `plan` wrote to `target` are all still there, unchanged (never if `fresh`)."""
    store = Store(workspace.store, fresh=fresh)
    try:
        return store.current(target, plan)
    finally:
        store.close()


def remember_documents(workspace: Workspace, target: Path, plan: str, files: list[Path]) -> None:
    """Note in the store that a run of `plan` wrote `files` for `target`: the next run of that plan writes nothing."""
    store = Store(workspace.store)
    try:
        store.remember(target, plan, files)
    finally:
        store.close()


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
