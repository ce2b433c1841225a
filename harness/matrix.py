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

import models as zoo
from harness import __version__
from harness.config import Matrix, load_matrix
from harness.journal import Journal
from harness.merge import in_order
from harness.opsupport import coverage, op_support
from harness.plan import digest, harness_digest, make_plan
from harness.pool import WorkerPool
from harness.progress import Progress
from harness.provisioning import ready_toolchains
from harness.records import ExcludedCase, ModelRecord, Results, RunInfo, VariantRecord
from harness.reproducer import failing_groups, write_bundles
from harness.runner import Runner
from harness.selection import Selection, narrow
from harness.suites import SUITES, ZOO, Suite
from harness.tasks import Tasks
from harness.workspace import Workspace


def load(config: Path, selection: Selection, suite: Suite = ZOO) -> Matrix:
    """The matrix file, validated, then narrowed by the selection."""
    return narrow(load_matrix(config, set(zoo.ZOO), set(zoo.TAGS)), selection, suite.selection_problems(selection))


def run_matrix(config: Path, selection: Selection, workspace: Workspace, jobs: int, fresh: bool,
               progress: Progress, suite: Suite | str = ZOO, worker_requests: int = 2000,
               reproducers: Path | None = None) -> Results:
    """Run one suite of the matrix (resuming an interrupted run of the same plan) and return its results.

    `worker_requests` is how many requests a worker serves before it is replaced (1: a process per cell).
    With `reproducers`, a reproducer bundle for every failing cell is written there.
    """
    started, clock = datetime.now(timezone.utc), time.monotonic()
    suite = SUITES[suite] if isinstance(suite, str) else suite
    matrix = load(config, selection, suite)
    chosen = suite.models(matrix, selection, workspace, progress)
    toolchains, toolchain_records = ready_toolchains(matrix, workspace, progress)
    identities = {r.id: digest(r.provenance) for r in toolchain_records if r.status == "ok"}
    plan = make_plan(matrix, identities, chosen.models, chosen.variants)
    if selection.shard:
        plan = plan.shard(*selection.shard)
    journal = Journal(workspace.run / suite.name, plan.id, fresh=fresh)
    pool = WorkerPool(toolchains, matrix.run.memory_limit_mb, worker_requests)
    tasks = Tasks(pool, chosen.models, matrix, journal, {r.id: r.converter_flags for r in toolchain_records})
    runner = Runner(journal, jobs, on_interrupt=pool.close)
    try:
        todo = [c for c in plan.conversions if c.key not in journal.conversions]
        with progress.task("convert", total=len(plan.conversions), done=len(plan.conversions) - len(todo)) as advance:
            runner.execute(todo, tasks.convert, lambda record: advance(record.outcome.verdict))
        todo_cells = [c for c in plan.cells if c.key not in journal.cells]
        with progress.task("run", total=len(plan.cells), done=len(plan.cells) - len(todo_cells)) as advance:
            runner.execute(todo_cells, tasks.run, lambda record: advance(record.outcome.verdict))
    finally:
        pool.close()
    journal.complete()
    cells = [journal.cells[c.key] for c in plan.cells]
    excluded = [ExcludedCase(name=c.name, op=c.op, rule=c.rule, reason=c.reason) for c in chosen.excluded]
    ops = op_support(cells, chosen.models, toolchain_records, excluded) if suite.op_support else []
    used_variants = {v for names in chosen.variants.values() for v in names}
    results = Results(
        suite=suite.name,
        run=RunInfo(started=started.isoformat(timespec="seconds"),
                    finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    duration_s=round(time.monotonic() - clock, 3), phases=dict(progress.durations), jobs=jobs,
                    resumed_cells=journal.resumed, selection=selection.summary(config),
                    harness={"version": __version__, "digest": harness_digest()}),
        host=host_info(), settings=matrix.run.model_dump(), toolchains=toolchain_records,
        models=[ModelRecord(name=m.name, sha256=m.sha256, source=m.source, tags=list(m.tags), guards=m.guards,
                            inputs=m.inputs, outputs=list(m.outputs), tolerance=m.tolerance,
                            onnxruntime=m.onnxruntime, run_skip=m.run_skip)
                for m in chosen.models.values()],
        variants=[VariantRecord(id=v.id, flags=v.flags, tolerance=v.tolerance.model_dump(exclude_defaults=True),
                                description=v.description) for v in matrix.variants if v.id in used_variants],
        excluded=excluded, conversions=[journal.conversions[c.key] for c in plan.conversions], cells=cells,
        op_support=ops, coverage=coverage(ops, toolchain_records))
    results = in_order(results)  # the order `harness merge` gives the shards of this run too
    if reproducers is not None:
        with progress.task("reproducers", total=len(failing_groups(results))) as advance:
            write_bundles(results, chosen.models, journal.run_dir, reproducers, advance)
        results = results.model_copy(update={"run": results.run.model_copy(update={
            "phases": dict(progress.durations), "duration_s": round(time.monotonic() - clock, 3)})})
    return results


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
