"""`nox -s bench`: how fast the matrix runs, and what the harness costs on top of MNN.

Three measurements, all on real toolchains and the micro models:
1. a full matrix run (fresh journal): conversions and run cells per second, CPU use of all cores;
2. per run cell: the harness's round trip against MNN's own in-process time for the same cell
   (load + runs, timed inside the worker around the MNN calls);
3. a sample of cells with a persistent worker, then with a new worker process for every cell;
4. restarts: a worker killed, then the next request answered, with a forked worker (harness/forkserver.py) and
   with a new process, for one toolchain of each kind (a venv, a container) that the run had ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

from harness import protocol
from harness.matrix import load, run_matrix
from harness.progress import Progress
from harness.records import Results
from harness.selection import Selection
from harness.supervisor import Worker, WorkerLost
from harness.toolchains import Toolchain, make_toolchain
from harness.workspace import Workspace, scratch

RESTART_SAMPLES = 30


def run_bench(config: Path, selection: Selection, workspace: Workspace, jobs: int, console: Console) -> dict:
    """Run the benchmark and return its figures (also printed as a table and saved as bench.json)."""
    space = Workspace(workspace.root / "bench", shared_envs=workspace.envs)
    cpu_before = _cpu_seconds()
    with Progress(console) as progress:
        results = run_matrix(config, selection, space, jobs, fresh=True, progress=progress)
    figures = _matrix_figures(results, _cpu_seconds() - cpu_before)
    figures.update(_per_cell_figures(results))
    console.print("same cells, one worker process per cell vs one persistent worker:")
    sample = Selection(converters=(results.cells[0].converter,), runtimes=(results.cells[0].runtime,),
                       models=selection.models, variants=(results.cells[0].variant,))
    timings = {}
    for label, requests in (("persistent", 2000), ("process_per_cell", 1)):
        with Progress(console) as progress:
            timings[label] = run_matrix(config, sample, space, jobs, fresh=True, progress=progress,
                                        worker_requests=requests)
    per_cell = {k: r.run.phases["run"] * jobs / len(r.cells) for k, r in timings.items()}
    figures.update(sample_cells=len(timings["persistent"].cells),
                   persistent_ms_per_cell=_ms(per_cell["persistent"]),
                   process_per_cell_ms_per_cell=_ms(per_cell["process_per_cell"]),
                   persistent_speedup=round(per_cell["process_per_cell"] / per_cell["persistent"], 1))
    figures.update(_restart_figures(config, results, space))
    _print(figures, console)
    target = workspace.root / "bench.json"
    target.write_text(json.dumps(figures, indent=2))
    console.print(f"wrote {target}")
    return figures


def _matrix_figures(results: Results, cpu_s: float) -> dict:
    phases = results.run.phases
    cores = os.cpu_count() or 1
    return {
        "cores": cores, "jobs": results.run.jobs, "run_cells": len(results.cells),
        "conversions": len(results.conversions), "phases_s": phases, "total_s": results.run.duration_s,
        "conversions_per_s": round(len(results.conversions) / phases["convert"], 1),
        "run_cells_per_s": round(len(results.cells) / phases["run"], 1),
        "cpu_utilization": round(cpu_s / (results.run.duration_s * cores), 3),
    }


def _per_cell_figures(results: Results) -> dict:
    """Round trip vs MNN's in-process time, for run cells that produced outputs."""
    ran = [c for c in results.cells if c.load_s is not None]
    mnn = [c.load_s + sum(c.run_s) for c in ran]
    trip = [c.wall_s for c in ran]
    overhead = [t - m for t, m in zip(trip, mnn, strict=False)]
    wall_per_cell = results.run.phases["run"] * results.run.jobs / len(results.cells)
    conv = [c for c in results.conversions if c.convert_s is not None]
    return {
        "run_cell_mnn_ms_mean": _ms(statistics.mean(mnn)),
        "run_cell_round_trip_ms_mean": _ms(statistics.mean(trip)),
        "run_cell_overhead_ms_mean": _ms(statistics.mean(overhead)),
        "run_cell_overhead_ms_p95": _ms(sorted(overhead)[int(0.95 * (len(overhead) - 1))]),
        "run_cell_wall_ms_per_job": _ms(wall_per_cell),
        "run_cell_total_overhead_ms": _ms(wall_per_cell - statistics.mean(mnn)),
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


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
