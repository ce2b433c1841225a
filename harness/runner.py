"""Executing a plan: conversions, then runs, on persistent workers, `jobs` at a time.

Each thread keeps one worker per toolchain it has used. A worker that crashes or hangs costs
one cell: the cell is recorded as `crash` or `timeout` and the next request starts a new worker.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

import numpy as np

from harness import verdicts
from harness.compare import compare_output, disagreement
from harness.config import Matrix, Tolerance
from harness.journal import Journal
from harness.modelstore import PreparedModel
from harness.plan import Cell, Conversion
from harness.records import CellRecord, ConversionRecord, Outcome, Verdict
from harness.toolchains import Toolchain
from harness.workers import Worker, WorkerLost

Item = TypeVar("Item")
Result = TypeVar("Result", ConversionRecord, CellRecord)


class Runner:
    """Runs conversions and cells for one plan, recording each in the journal as it finishes."""

    def __init__(self, toolchains: Mapping[str, Toolchain], models: Mapping[str, PreparedModel],
                 matrix: Matrix, journal: Journal, jobs: int, converter_flags: Mapping[str, list[str]],
                 worker_requests: int = 2000) -> None:
        self.toolchains, self.models, self.matrix, self.journal = toolchains, models, matrix, journal
        self.jobs, self.converter_flags, self.worker_requests = jobs, converter_flags, worker_requests
        self.scratch = Path(tempfile.mkdtemp(prefix="mnnm-"))  # short path: socket names are limited
        self._local = threading.local()
        self._workers: list[Worker] = []
        self._lock = threading.Lock()
        self._data: dict[str, tuple[dict, dict]] = {}

    # -------------------------------------------------------------- scheduling

    def execute(self, items: Iterable[Item], task: Callable[[Item], Result],
                on_record: Callable[[Result], None] = lambda record: None) -> None:
        """Run `task` over `items` on `jobs` threads, journaling each record as it arrives.

        On an interrupt, pending items are dropped and in-flight ones are not journaled, so the
        journal holds only cells that really finished.
        """
        pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="cell")
        futures = [pool.submit(self._guarded, task, item) for item in items]
        try:
            for future in as_completed(futures):
                record = future.result()
                self.journal.add(record)
                on_record(record)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self.close()
            raise
        pool.shutdown()

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def worker(self, toolchain: str) -> Worker:
        """This thread's worker for `toolchain`."""
        workers = self._local.__dict__.setdefault("workers", {})
        if toolchain not in workers:
            name = f"{toolchain}-{threading.current_thread().name}"
            workers[toolchain] = Worker(self.toolchains[toolchain], self.scratch, name,
                                        max_requests=self.worker_requests)
            with self._lock:
                self._workers.append(workers[toolchain])
        return workers[toolchain]

    # -------------------------------------------------------------- tasks

    def convert(self, conversion: Conversion) -> ConversionRecord:
        model = self.models[conversion.model]
        known = self.converter_flags.get(conversion.converter, [])
        base = dict(key=conversion.key, converter=conversion.converter, model=conversion.model,
                    variant=conversion.variant, flags=list(conversion.flags),
                    ignored_flags=[f for f in conversion.flags if f.startswith("--") and f not in known])
        request = {"op": "convert", "src": str(model.onnx_path), "dst": str(self.converted_path(conversion.key)),
                   "flags": list(conversion.flags)}
        try:
            reply = self.worker(conversion.converter).request(request, timeout=self.matrix.run.timeouts.convert_s)
        except WorkerLost as lost:
            return ConversionRecord(**base, outcome=verdicts.lost(lost.kind, "convert", lost.detail, lost.log_tail))
        header = reply.header
        if header["ok"] and header["produced"]:
            outcome = Outcome(verdict=Verdict.PASS, stage="convert")
        else:
            outcome = verdicts.classify(header.get("stage", "convert"), header["log"], header.get("error", ""))
        return ConversionRecord(**base, outcome=outcome, size_bytes=header.get("size_bytes", 0),
                                convert_s=header.get("seconds"), wall_s=reply.wall_s)

    def run(self, cell: Cell) -> CellRecord:
        conversion = self.journal.conversions[cell.conversion.key]
        base = dict(key=cell.key, converter=cell.converter, runtime=cell.runtime, model=cell.model,
                    variant=cell.variant, api=cell.api)
        if conversion.outcome.verdict != Verdict.PASS:
            return CellRecord(**base, outcome=conversion.outcome)
        inputs, reference = self.data(cell.model)
        settings = self.matrix.run
        request = {"op": "run", "model": str(self.converted_path(conversion.key)), "api": cell.api,
                   "inputs": list(inputs), "outputs": list(reference), "threads": settings.threads,
                   "precision": settings.precision, "repeat": settings.repeat}
        try:
            reply = self.worker(cell.runtime).request(request, inputs, timeout=settings.timeouts.run_s)
        except WorkerLost as lost:
            return CellRecord(**base, outcome=verdicts.lost(lost.kind, "run", lost.detail, lost.log_tail))
        header = reply.header
        if not header["ok"]:
            return CellRecord(**base, outcome=verdicts.classify(header["stage"], header["log"], header["error"]),
                              wall_s=reply.wall_s)
        repeats = [{name: reply.arrays[f"{i}/{name}"] for name in reference} for i in range(settings.repeat)]
        model = self.models[cell.model]
        tolerance = Tolerance(**model.tolerance) if model.tolerance else self.matrix.variant(cell.variant).tolerance
        deltas = [compare_output(name, repeats[0][name], reference[name], tolerance) for name in reference]
        differs = disagreement(repeats)
        return CellRecord(**base, outcome=verdicts.judge_outputs(deltas, differs, header["log"]), outputs=deltas,
                          repeats_agree=differs is None, load_s=header["load_s"], run_s=header["run_s"],
                          wall_s=reply.wall_s)

    # -------------------------------------------------------------- helpers

    def converted_path(self, key: str) -> Path:
        return self.journal.converted_dir / f"{key[:24]}.mnn"

    def data(self, model: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A model's inputs and reference outputs, read once."""
        if model not in self._data:
            prepared = self.models[model]
            self._data[model] = (prepared.load_inputs(), prepared.load_reference())
        return self._data[model]

    @staticmethod
    def _guarded(task: Callable[[Item], Result], item: Item) -> Result:
        """A bug in the harness fails its cell visibly instead of ending the run."""
        try:
            return task(item)
        except Exception:
            outcome = Outcome(verdict=Verdict.UNCLASSIFIED, stage="harness", reason="harness error",
                              log_excerpt=traceback.format_exc(limit=6)[-1500:])
            if isinstance(item, Conversion):
                return ConversionRecord(key=item.key, converter=item.converter, model=item.model,
                                        variant=item.variant, flags=list(item.flags), outcome=outcome)
            return CellRecord(key=item.key, converter=item.converter, runtime=item.runtime, model=item.model,
                              variant=item.variant, api=item.api, outcome=outcome)
