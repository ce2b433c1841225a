"""Executing a plan: conversions, then runs, on persistent workers, `jobs` at a time.

Each thread keeps one worker per toolchain it has used. A worker that crashes or hangs costs
one cell: the cell is recorded as `crash` or `timeout` and the next request starts a new worker.
"""

from __future__ import annotations

import re
import shutil
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from harness import verdicts
from harness.calibration import calibration_dir, write_calibration
from harness.compare import compare_output, disagreement
from harness.config import Matrix, Quantize, Tolerance
from harness.journal import Journal
from harness.mnnfiles import model_difference
from harness.modelstore import PreparedModel
from harness.plan import Cell, Conversion
from harness.records import CellRecord, ConversionRecord, Outcome, OutputDelta, Verdict
from harness.toolchains import Toolchain
from harness.workers import Reply, Worker, WorkerLost
from harness.workspace import scratch_dir

Item = TypeVar("Item")
QUANT_METHOD = re.compile(r"Use (feature|weight) quantization method: (\w+)")  # what the tool really used


@dataclass(frozen=True)
class Step:
    """What one convert or quantize request came to."""

    outcome: Outcome
    size: int = 0
    seconds: float | None = None
    wall_s: float = 0.0
    log: str = ""
Result = TypeVar("Result", ConversionRecord, CellRecord)


def _twice(first: Step, second: Step, produced: Path) -> tuple[Outcome, str]:
    """The outcome of a step done twice (a tool whose survival or output varies run to run is unstable, so
    its models' verdicts would be luck) and how the two outputs differ ('' when they do not)."""
    again = produced.with_suffix(".again.mnn")
    ok = [step.outcome.verdict == Verdict.PASS for step in (first, second)]
    if all(ok):
        difference = model_difference(produced, again)
        again.unlink()
        return first.outcome, difference and f"two quantizations differ ({difference})"
    again.unlink(missing_ok=True)
    if not any(ok):
        return first.outcome, ""
    failed = first if not ok[0] else second
    outcome = Outcome(verdict=Verdict.NONDETERMINISTIC, stage=failed.outcome.stage,
                      reason=f"the tool failed in 1 of 2 identical attempts ({failed.outcome.verdict.value}: "
                             f"{failed.outcome.reason})"[:500],
                      ops=failed.outcome.ops, pattern=failed.outcome.pattern, log_excerpt=failed.outcome.log_excerpt)
    return outcome, ""


class Runner:
    """Runs conversions and cells for one plan, recording each in the journal as it finishes."""

    def __init__(self, toolchains: Mapping[str, Toolchain], models: Mapping[str, PreparedModel],
                 matrix: Matrix, journal: Journal, jobs: int, converter_flags: Mapping[str, list[str]],
                 worker_requests: int = 2000) -> None:
        self.toolchains, self.models, self.matrix, self.journal = toolchains, models, matrix, journal
        self.jobs, self.converter_flags, self.worker_requests = jobs, converter_flags, worker_requests
        self.scratch = scratch_dir()  # short path: socket names are limited; swept if this process is killed
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

    def request(self, toolchain: str, header: dict, arrays: dict | None = None, timeout: float = 120,
                fresh: bool = False) -> Reply:
        """One request on this thread's worker, made crash-honest.

        A crash in a worker that had served earlier requests may be damage those requests left, so
        the request is tried once more on a fresh worker: only a crash there counts. `fresh` runs
        the request alone in a worker of its own (for tools known to damage their process).
        """
        if fresh:
            worker = Worker(self.toolchains[toolchain], self.scratch, f"{toolchain}-{threading.get_ident()}-solo",
                            memory_limit_mb=self.matrix.run.memory_limit_mb)
            try:
                return worker.request(header, arrays, timeout)
            finally:
                worker.close()
        worker = self.worker(toolchain)
        try:
            return worker.request(header, arrays, timeout)
        except WorkerLost as lost:
            served = worker.requests - 1
            if lost.kind != "crash" or served == 0:
                raise
            reply = worker.request(header, arrays, timeout)  # a fresh process: the worker restarts
            reply.header["note"] = (f"crashed ({lost.detail}) in a worker that had served {served} earlier "
                                    "requests; a fresh worker ran it without crashing")
            return reply

    def worker(self, toolchain: str, role: str = "main") -> Worker:
        """This thread's worker for `toolchain` in `role` ('main', or 'check': a second process whose different
        heap history makes a converter that reads uninitialized memory write a different model)."""
        workers = self._local.__dict__.setdefault("workers", {})
        if (toolchain, role) not in workers:
            name = f"{toolchain}-{threading.current_thread().name}-{role}"
            workers[toolchain, role] = Worker(self.toolchains[toolchain], self.scratch, name,
                                              max_requests=self.worker_requests,
                                              memory_limit_mb=self.matrix.run.memory_limit_mb)
            with self._lock:
                self._workers.append(workers[toolchain, role])
        return workers[toolchain, role]

    # -------------------------------------------------------------- tasks

    def convert(self, conversion: Conversion) -> ConversionRecord:
        """Convert (and, for a quantized variant, quantize) one model with one converter."""
        model = self.models[conversion.model]
        known = self.converter_flags.get(conversion.converter, [])
        base = dict(key=conversion.key, converter=conversion.converter, model=conversion.model,
                    variant=conversion.variant, flags=list(conversion.flags), quantize=conversion.quantize,
                    ignored_flags=[f for f in conversion.flags if f.startswith("--") and f not in known])
        converted = self.float_path(conversion.key) if conversion.quantize else self.converted_path(conversion.key)
        request = {"op": "convert", "src": str(model.onnx_path), "dst": str(converted), "flags": list(conversion.flags)}
        step = self._step(conversion.converter, "convert", request)
        if step.outcome.verdict == Verdict.PASS:
            base["reconversion_differs"] = self._reconvert(conversion.converter, request)
        if step.outcome.verdict != Verdict.PASS or not conversion.quantize:
            return ConversionRecord(**base, outcome=step.outcome, size_bytes=step.size, convert_s=step.seconds,
                                    wall_s=step.wall_s)
        with self._lock:  # several converters may quantize the same model at once: they share its samples
            config = write_calibration(model, Quantize(**conversion.quantize),
                                       calibration_dir(self.journal.run_dir, model, conversion.quantize))
        final = self.converted_path(conversion.key)
        request = {"op": "quantize", "src": str(converted), "dst": str(final), "config": str(config)}
        quantized = self._step(conversion.converter, "quantize", request)
        again = self._step(conversion.converter, "quantize",
                           {**request, "dst": str(final.with_suffix(".again.mnn")), "attempt": 1})
        outcome, differs = _twice(quantized, again, final)
        return ConversionRecord(**{**base, "reconversion_differs": base.get("reconversion_differs") or differs},
                                outcome=outcome, size_bytes=quantized.size,
                                float_size_bytes=step.size, quantized_with=dict(QUANT_METHOD.findall(quantized.log)),
                                convert_s=step.seconds, quantize_s=quantized.seconds,
                                wall_s=step.wall_s + quantized.wall_s + again.wall_s)

    def _reconvert(self, toolchain: str, request: dict) -> str:
        """Convert again and say how the second model differs from the first ('' if it does not)."""
        again = Path(request["dst"]).with_suffix(".again.mnn")
        step = self._step(toolchain, "convert", {**request, "dst": str(again), "attempt": 1})
        if step.outcome.verdict != Verdict.PASS:
            return f"the second one failed: {step.outcome.verdict.value} {step.outcome.reason}".strip()
        difference = model_difference(Path(request["dst"]), again)
        again.unlink()
        return difference and f"two conversions differ ({difference})"

    def _step(self, toolchain: str, stage: str, request: dict) -> Step:
        """One convert or quantize request, judged by the file it writes."""
        try:
            reply = self.request(toolchain, request, timeout=self.matrix.run.timeouts.convert_s,
                                 fresh=stage == "quantize")
        except WorkerLost as lost:
            return Step(verdicts.lost(lost.kind, stage, lost.detail, lost.log_tail))
        header = reply.header
        if header["ok"] and header["produced"]:
            outcome = Outcome(verdict=Verdict.PASS, stage=stage, note=header.get("note", ""))
        else:
            outcome = verdicts.classify(stage, header["log"], header.get("error", "")).model_copy(
                update={"note": header.get("note", "")})
        return Step(outcome, header.get("size_bytes", 0), header.get("seconds"), reply.wall_s, header["log"])

    def run(self, cell: Cell) -> CellRecord:
        """Run one converted model under one runtime, API and memory mode, and judge its outputs; a run of a
        model its converter does not write the same way twice is qualified (verdicts.unstable_conversion)."""
        conversion = self.journal.conversions[cell.conversion.key]
        record = self._run(cell, conversion)
        if not conversion.reconversion_differs:
            return record
        return record.model_copy(update={
            "outcome": verdicts.unstable_conversion(record.outcome, conversion.reconversion_differs)})

    def _run(self, cell: Cell, conversion: ConversionRecord) -> CellRecord:
        base = dict(key=cell.key, converter=cell.converter, runtime=cell.runtime, model=cell.model,
                    variant=cell.variant, api=cell.api, memory=cell.memory)
        if conversion.outcome.verdict != Verdict.PASS:
            return CellRecord(**base, outcome=conversion.outcome)
        skip = getattr(self.models[cell.model], "run_skip", "")
        if skip:
            return CellRecord(**base, outcome=Outcome(verdict=Verdict.NOT_RUN, stage="run", reason=skip))
        inputs, reference = self.data(cell.model)
        settings = self.matrix.run
        request = {"op": "run", "model": str(self.converted_path(conversion.key)), "api": cell.api,
                   "inputs": list(inputs), "outputs": list(reference), "threads": settings.threads,
                   "precision": settings.precision, "memory": cell.memory, "repeat": settings.repeat}
        try:
            reply = self.request(cell.runtime, request, inputs, timeout=settings.timeouts.run_s)
        except WorkerLost as lost:
            return CellRecord(**base, outcome=verdicts.lost(lost.kind, "run", lost.detail, lost.log_tail))
        header = reply.header
        note = {"note": header.get("note", "")}
        if not header["ok"]:
            outcome = verdicts.classify(header["stage"], header["log"], header["error"])
            return CellRecord(**base, outcome=outcome.model_copy(update=note), wall_s=reply.wall_s)
        repeats = [{name: reply.arrays[f"{i}/{name}"] for name in reference} for i in range(settings.repeat)]
        model = self.models[cell.model]
        tolerance = Tolerance(**model.tolerance) if model.tolerance else self.matrix.variant(cell.variant).tolerance
        deltas = [compare_output(name, repeats[0][name], reference[name], tolerance) for name in reference]
        differs = disagreement(repeats)
        outcome = verdicts.judge_outputs(deltas, differs, header["log"])
        return CellRecord(**base, outcome=outcome.model_copy(update=note), outputs=deltas, fed=header["fed"],
                          outputs_vs_float=self._against_float(cell, request, inputs, repeats[0], tolerance)
                          if conversion.quantize else [],
                          repeats_agree=differs is None, load_s=header["load_s"], run_s=header["run_s"],
                          wall_s=reply.wall_s)

    def _against_float(self, cell: Cell, request: dict, inputs: dict, outputs: dict,
                       tolerance: Tolerance) -> list[OutputDelta]:
        """A quantized model's outputs against its float model's, run the same way (empty if that fails)."""
        request = {**request, "model": str(self.float_path(cell.conversion.key)), "repeat": 1}
        try:
            reply = self.request(cell.runtime, request, inputs, timeout=self.matrix.run.timeouts.run_s)
        except WorkerLost:
            return []
        if not reply.header["ok"]:
            return []
        return [compare_output(name, value, reply.arrays[f"0/{name}"], tolerance) for name, value in outputs.items()]

    # -------------------------------------------------------------- helpers

    def converted_path(self, key: str) -> Path:
        return self.journal.converted_dir / f"{key[:24]}.mnn"

    def float_path(self, key: str) -> Path:
        """Where a quantized variant's float model (before quantization) is kept."""
        return self.journal.converted_dir / f"{key[:24]}.float.mnn"

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
                              variant=item.variant, api=item.api, memory=item.memory, outcome=outcome)
