"""`nox -s bench`: how fast the matrix runs, and what the harness costs on top of MNN.

1. Scale, on the full default matrix (every suite, every toolchain) in the user's workspace, as `nox -s matrix`
   runs it (documents and reproducer bundles written to `.mnn-matrix/bench/out/`): a cold run that ignores the
   store (`--fresh`), a rerun with nothing changed, and a run where only the newest toolchain changed (its identity
   altered as a new SHA would); per suite, phases, how busy both cores were, and how many cells were served by a
   run of an identical converted model. The cold run fills the store, so a `nox -s matrix` after it reuses it.
2. Per run cell, on the micro models with one job: the harness's round trip against MNN's own in-process time
   (load + runs, timed inside the worker); the full runs give the harness's own CPU per run.
3. A sample of micro cells with a persistent worker, then with a new worker process for every cell.
4. Restarts: a worker killed, then the next request answered, forked (harness/forkserver.py) and as a new process,
   for one toolchain of each kind (a venv, a container) that is ready.
`--no-scale` leaves out 1 (a minute instead of half an hour).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

from harness import protocol, provisioning
from harness.matrix import load, run_matrix, run_suite
from harness.progress import Progress
from harness.records import Results, Verdict
from harness.selection import Selection
from harness.suites import SUITES
from harness.supervisor import Worker, WorkerLost
from harness.toolchains import Toolchain, make_toolchain
from harness.workspace import Workspace, scratch

RESTART_SAMPLES = 30


def run_bench(config: Path, selection: Selection, workspace: Workspace, jobs: int, console: Console,
              scale: bool = True) -> dict:
    """Run the benchmark and return its figures (also printed as a table and saved as bench.json)."""
    space = Workspace(workspace.root / "bench", shared_envs=workspace.envs)
    figures: dict = {}
    if scale:
        cold = _scale_figures(config, workspace, jobs, console, figures)
    else:
        with Progress(console) as progress:
            cold = [run_matrix(config, selection, space, jobs, fresh=True, progress=progress)]
            figures["micro"] = _suite_figures(cold[0], progress)
    console.print("one job, so that a cell's round trip is MNN's time and the harness's, without queueing:")
    with Progress(console) as progress:
        alone = run_matrix(config, selection, space, 1, fresh=True, progress=progress)
    figures.update(_per_cell_figures(alone))
    console.print("same cells, one worker process per cell vs one persistent worker:")
    first = cold[0].cells[0]
    sample = Selection(converters=(first.converter,), runtimes=(first.runtime,), models=selection.models,
                       variants=("fp32",))
    timings = {}
    for label, requests in (("persistent", 2000), ("process_per_cell", 1)):
        with Progress(console) as progress:
            timings[label] = run_matrix(config, sample, space, 1, fresh=True, progress=progress,
                                        worker_requests=requests)
    per_cell = {k: r.run.phases["run"] / len(r.cells) for k, r in timings.items()}
    figures.update(sample_cells=len(timings["persistent"].cells),
                   persistent_ms_per_cell=_ms(per_cell["persistent"]),
                   process_per_cell_ms_per_cell=_ms(per_cell["process_per_cell"]),
                   persistent_speedup=round(per_cell["process_per_cell"] / per_cell["persistent"], 1))
    figures.update(_restart_figures(config, cold[0], space))
    _print(figures, console)
    target = workspace.root / "bench.json"
    target.write_text(json.dumps(figures, indent=2))
    console.print(f"wrote {target}")
    return figures


def _scale_figures(config: Path, workspace: Workspace, jobs: int, console: Console, figures: dict) -> list[Results]:
    """Cold, rerun and only-the-newest-toolchain-changed runs of the full default matrix; the cold runs' results."""
    matrix = load(config, Selection())
    suites = [suite for suite in SUITES.values() if suite.enabled(matrix, Selection())]
    out = workspace.root / "bench" / "out"
    newest = matrix.toolchains[-1].id

    def full(label: str, fresh: bool) -> list[Results]:
        console.print(f"[bold]{label}[/bold]")
        started, made = time.monotonic(), []
        for suite in suites:
            bundles = workspace.root / "bench" / "reproducers" / suite.name if suite.reproducers else None
            clock = time.monotonic()
            with Progress(console) as progress:
                results, _ = run_suite(config, Selection(), workspace, jobs, fresh, progress, suite,
                                       out / suite.results_dir, bundles)
            figures[f"{label}_{suite.name}_s"] = round(time.monotonic() - clock, 1)
            if results is not None:
                made.append(results)
                figures[f"{label}_{suite.name}"] = _suite_figures(results, progress)
        figures[f"{label}_total_s"] = round(time.monotonic() - started, 1)
        return made

    cold = full("cold", fresh=True)
    full("rerun", fresh=False)
    with _new_identity(newest):
        full(f"only_{newest}_changed", fresh=False)
    return cold


def _suite_figures(results: Results, progress: Progress) -> dict:
    """One suite's run: its size, phases, how busy the cores were in each, what the harness itself cost, and how
    many cells were served by a run of an identical converted model (or of the store) instead of their own."""
    phases = results.run.phases
    made = sum(not c.reused_from and c.outcome.stage not in ("convert", "quantize")
               and c.outcome.verdict != Verdict.NOT_RUN for c in results.cells)  # MNN runs this run made
    run_s = phases.get("run", 0.0)
    return {"cells": len(results.cells), "conversions": len(results.conversions), "phases_s": phases,
            "total_s": results.run.duration_s, "cores_busy": progress.busy, "harness_cpu": progress.own,
            "run_cells_per_s": round(len(results.cells) / run_s, 1) if run_s else None,
            "runs_made": made, "cells_reused": results.run.resumed_cells,
            "reuse_ratio": round(results.run.resumed_cells / max(made + results.run.resumed_cells, 1), 3),
            "harness_cpu_ms_per_run": _ms(progress.own.get("run", 0.0) * run_s / made) if made else None}


@contextlib.contextmanager
def _new_identity(toolchain_id: str) -> Iterator[None]:
    """Within, `toolchain_id` has another identity, as a new SHA of it would: every key that names it changes."""
    ready = provisioning.ready_toolchains  # read there at each call, by the matrix and the llm suite alike

    def altered(*args, **kwargs):
        toolchains, records = ready(*args, **kwargs)
        return toolchains, [r.model_copy(update={"provenance": {**r.provenance, "bench": "simulated new SHA"}})
                            if r.id == toolchain_id else r for r in records]

    provisioning.ready_toolchains = altered
    try:
        yield
    finally:
        provisioning.ready_toolchains = ready


def _per_cell_figures(results: Results) -> dict:
    """Round trip vs MNN's in-process time, for run cells that produced outputs (one job: no queueing)."""
    ran = [c for c in results.cells if c.load_s is not None and not c.reused_from]
    mnn = [c.load_s + sum(c.run_s) for c in ran]
    overhead = sorted(c.wall_s - m for c, m in zip(ran, mnn, strict=True))
    conv = [c for c in results.conversions if c.convert_s is not None]
    return {
        "run_cells_measured": len(ran),
        "run_cell_mnn_ms_mean": _ms(statistics.mean(mnn)),
        "run_cell_round_trip_ms_mean": _ms(statistics.mean(c.wall_s for c in ran)),
        "run_cell_overhead_ms_mean": _ms(statistics.mean(overhead)),
        "run_cell_overhead_ms_p95": _ms(overhead[int(0.95 * (len(overhead) - 1))]),
        "convert_mnn_ms_mean": _ms(statistics.mean(c.convert_s for c in conv)),
        "convert_overhead_ms_mean": _ms(statistics.mean(c.wall_s - c.convert_s for c in conv)),
    }


def _restart_figures(config: Path, results: Results, space: Workspace) -> dict:
    """Restart time (worker killed -> next request answered), median and p95, forked and as a new process, for
    the first ready toolchain of each kind."""
    ready = {record.id: record.kind for record in results.toolchains if record.status == "ok"}
    figures = {}
    for kind in ("pypi", "source"):
        spec = next((spec for spec in load(config, Selection()).toolchains if ready.get(spec.id) == kind), None)
        if spec is None:
            continue
        toolchain = make_toolchain(spec, space)
        toolchain.provision()
        for label, fork in (("forked", True), ("new_process", False)):
            times = sorted(restart_times(toolchain, fork))
            figures[f"restart_{kind}_{label}_ms_median"] = _ms(statistics.median(times))
            figures[f"restart_{kind}_{label}_ms_p95"] = _ms(times[int(0.95 * (len(times) - 1))])
    return figures


def restart_times(toolchain: Toolchain, fork: bool, samples: int = RESTART_SAMPLES) -> list[float]:
    """Seconds from killing a worker to the answer of the next request but one (the first finds it lost)."""
    with scratch("b") as directory:  # a container sees it: its workers' sockets are there
        source, model = directory / "relu.onnx", directory / "relu.mnn"
        tensor = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4]) for name in ("x", "y")]
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", tensor[:1], tensor[1:])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), source)
        inputs = {"x": np.ones((1, 4), np.float32)}
        request = protocol.run_request(model, "module", inputs, ["y"])
        worker = Worker(toolchain, directory, "restart", fork=fork)
        times = []
        try:
            worker.request(protocol.convert_request(source, model))
            for _ in range(samples):
                assert worker.process is not None
                started = time.perf_counter()
                worker.process.kill()
                with contextlib.suppress(WorkerLost):
                    worker.request(request, inputs)
                worker.request(request, inputs)
                times.append(time.perf_counter() - started)
        finally:
            worker.close()
        return times


def _print(figures: dict, console: Console) -> None:
    table = Table(title="mnn-matrix benchmark", show_header=False)
    for key, value in figures.items():
        table.add_row(key, str(value))
    console.print(table)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
