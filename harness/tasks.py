"""The work of one cell: a conversion (convert, convert again, quantize three times) or a run (feed, run, judge), each
a method over the worker pool that returns its record. harness.runner schedules them."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import judge, protocol, verdicts
from harness.calibration import calibration_dir, write_calibration
from harness.compare import compare_output, disagreement
from harness.config import Matrix, Quantize, Tolerance
from harness.journal import Journal
from harness.mnnfiles import model_difference
from harness.modelstore import PreparedModel
from harness.plan import Cell, Conversion
from harness.pool import WorkerPool
from harness.records import CellRecord, ConversionRecord, Outcome, OutputDelta, Verdict
from harness.supervisor import WorkerLost

QUANT_METHOD = re.compile(r"Use (feature|weight) quantization method: (\w+)")  # what the tool really used


@dataclass(frozen=True)
class Step:
    """What one convert or quantize request came to, judged."""

    outcome: Outcome
    reply: protocol.ToolReply | None = None  # None when the worker was lost

    @property
    def passed(self) -> bool:
        return self.outcome.verdict == Verdict.PASS

    @property
    def size(self) -> int:
        return self.reply.size_bytes if self.reply else 0

    @property
    def seconds(self) -> float | None:
        return self.reply.seconds if self.reply else None

    @property
    def wall_s(self) -> float:
        return self.reply.wall_s if self.reply else 0.0


QUANTIZE_ATTEMPTS = 3  # a tool that fails or writes other bytes at random shows it in one of three far more often


def attempts(steps: list[Step], outputs: list[Path], what: str = "quantizations") -> tuple[Outcome, str]:
    """The outcome of a tool run several times on the same input (judge.repeated decides), and how its outputs
    differ; the first output is kept, the others removed."""
    differences = [model_difference(outputs[0], other) for other, step in zip(outputs[1:], steps[1:], strict=True)
                   if step.passed and steps[0].passed]
    for other in outputs[1:]:
        other.unlink(missing_ok=True)
    judged, differs = judge.repeated([step.outcome.model_dump(mode="json") for step in steps], differences, what)
    return Outcome(**judged), differs


class Tasks:
    """Conversions and run cells of one plan, over a worker pool; paths come from the journal."""

    def __init__(self, pool: WorkerPool, models: Mapping[str, PreparedModel], matrix: Matrix, journal: Journal,
                 converter_flags: Mapping[str, list[str]]) -> None:
        self.pool, self.models, self.matrix, self.journal = pool, models, matrix, journal
        self.converter_flags = converter_flags
        self._calibration_lock = threading.Lock()
        self._data: dict[str, tuple[dict, dict]] = {}
        self._data_lock = threading.Lock()

    # -------------------------------------------------------------- conversions

    def convert(self, conversion: Conversion) -> ConversionRecord:
        """Convert (and, for a quantized variant, quantize) one model with one converter, each tool repeated."""
        model = self.models[conversion.model]
        known = self.converter_flags.get(conversion.converter, [])
        base = dict(key=conversion.key, converter=conversion.converter, model=conversion.model,
                    variant=conversion.variant, flags=list(conversion.flags), quantize=conversion.quantize,
                    ignored_flags=[f for f in conversion.flags if f.startswith("--") and f not in known])
        converted = (self.journal.float_path if conversion.quantize else self.journal.converted_path)(conversion.key)
        outputs = [converted, converted.with_suffix(".again1.mnn")]
        steps = [self._tool(conversion.converter, "convert",
                            protocol.convert_request(model.onnx_path, target, conversion.flags, attempt))
                 for attempt, target in enumerate(outputs)]
        outcome, differs = attempts(steps, outputs, "conversions")
        step = steps[0]
        if outcome.verdict != Verdict.PASS or not conversion.quantize:
            return ConversionRecord(**base, outcome=outcome, reconversion_differs=differs, size_bytes=step.size,
                                    convert_s=step.seconds, wall_s=sum(s.wall_s for s in steps))
        return self._quantize(conversion, model, converted, step, {**base, "reconversion_differs": differs})

    def _quantize(self, conversion: Conversion, model: PreparedModel, float_model: Path, converted: Step,
                  base: dict) -> ConversionRecord:
        """Quantize QUANTIZE_ATTEMPTS times with MNN's tool, each alone in a fresh worker (the tool damages its
        process) and in other memory."""
        with self._calibration_lock:  # several converters may quantize the same model at once: they share samples
            config = write_calibration(model, Quantize(**conversion.quantize),
                                       calibration_dir(self.journal.run_dir, model, conversion.quantize))
        final = self.journal.converted_path(conversion.key)
        outputs = [final] + [final.with_suffix(f".again{n}.mnn") for n in range(1, QUANTIZE_ATTEMPTS)]
        steps = [self._tool(conversion.converter, "quantize",
                            protocol.quantize_request(float_model, target, config, attempt))
                 for attempt, target in enumerate(outputs)]
        outcome, differs = attempts(steps, outputs)
        first = steps[0]
        return ConversionRecord(**{**base, "reconversion_differs": base["reconversion_differs"] or differs},
                                outcome=outcome, size_bytes=first.size, float_size_bytes=converted.size,
                                quantized_with=dict(QUANT_METHOD.findall(first.reply.log if first.reply else "")),
                                convert_s=converted.seconds, quantize_s=first.seconds,
                                wall_s=converted.wall_s + sum(step.wall_s for step in steps))

    def _tool(self, toolchain: str, stage: str, request: dict) -> Step:
        """One convert or quantize request, judged by the file it writes."""
        try:
            reply = protocol.ToolReply.read(self.pool.request(toolchain, request, fresh=stage == "quantize",
                                                              timeout=self.matrix.run.timeouts.convert_s))
        except WorkerLost as lost:
            return Step(verdicts.lost(lost.kind, stage, lost.detail, self._scrub(lost.log_tail)))
        outcome = Outcome(verdict=Verdict.PASS, stage=stage) if reply.produced else verdicts.classify(
            stage, self._scrub(reply.log), self._scrub(reply.error))
        return Step(outcome.model_copy(update={"note": reply.note}), reply)

    # -------------------------------------------------------------- runs

    def run(self, cell: Cell) -> CellRecord:
        """Run one converted model under one runtime, API and memory mode, and judge its outputs; a run of a model
        the tool under test does not write the same way twice is qualified (verdicts.unstable_conversion)."""
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
        model = self.models[cell.model]
        if model.run_skip:
            return CellRecord(**base, outcome=Outcome(verdict=Verdict.NOT_RUN, stage="run", reason=model.run_skip))
        inputs, reference = self.data(cell.model)
        try:
            reply = self._request_run(cell, self.journal.converted_path(conversion.key), inputs, reference,
                                      self.matrix.run.repeat)
        except WorkerLost as lost:
            return CellRecord(**base, outcome=verdicts.lost(lost.kind, "run", lost.detail, self._scrub(lost.log_tail)))
        note = {"note": reply.note}
        if not reply.ok:
            outcome = verdicts.classify(reply.stage, self._scrub(reply.log), self._scrub(reply.error))
            return CellRecord(**base, outcome=outcome.model_copy(update=note), wall_s=reply.wall_s)
        tolerance = Tolerance(**model.tolerance) if model.tolerance else self.matrix.variant(cell.variant).tolerance
        deltas = [compare_output(name, reply.repeats[0][name], reference[name], tolerance) for name in reference]
        differs = disagreement(reply.repeats)
        outcome = verdicts.judge_outputs(deltas, differs, self._scrub(reply.log))
        return CellRecord(**base, outcome=outcome.model_copy(update=note), outputs=deltas, fed=reply.fed,
                          outputs_vs_float=self._against_float(cell, inputs, reply.repeats[0], tolerance)
                          if conversion.quantize else [],
                          repeats_agree=differs is None, load_s=reply.load_s, run_s=reply.run_s, wall_s=reply.wall_s)

    def _request_run(self, cell: Cell, model: Path, inputs: dict, reference: dict, repeat: int) -> protocol.RunReply:
        settings = self.matrix.run
        request = protocol.run_request(model, cell.api, inputs, list(reference), settings.threads, settings.precision,
                                       cell.memory, repeat)
        reply = self.pool.request(cell.runtime, request, inputs, timeout=settings.timeouts.run_s)
        return protocol.RunReply.read(reply, list(reference), repeat)

    def _against_float(self, cell: Cell, inputs: dict, outputs: dict, tolerance: Tolerance) -> list[OutputDelta]:
        """A quantized model's outputs against its float model's, run the same way (empty if that fails)."""
        try:
            reply = self._request_run(cell, self.journal.float_path(cell.conversion.key), inputs, outputs, 1)
        except WorkerLost:
            return []
        if not reply.ok:
            return []
        return [compare_output(name, value, reply.repeats[0][name], tolerance) for name, value in outputs.items()]

    def _scrub(self, text: str) -> str:
        """Native output without this run's own paths, so that where a run ran never shows in its results."""
        return text.replace(str(self.journal.run_dir), "<run>").replace(str(self.pool.scratch), "<scratch>")

    def data(self, model: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A model's inputs and reference outputs, read once."""
        with self._data_lock:  # cells of one model run on several threads
            if model not in self._data:
                prepared = self.models[model]
                self._data[model] = (prepared.load_inputs(), prepared.load_reference())
            return self._data[model]
