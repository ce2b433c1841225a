"""The work of one cell: a conversion (convert, convert again, quantize three times) or a run (feed, run, judge), each
a method over the toolchains' clients (harness.client) that returns its record; `resolve` gives each cell its record
from the run of its model. harness.runner schedules them; converted models are kept in harness.store."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path

from harness import judge, verdicts
from harness.calibration import calibration_dir, write_calibration
from harness.client import Client, RunResult, ToolResult
from harness.compare import compare_output, disagreement
from harness.config import Matrix, Quantize, Tolerance
from harness.mnnfiles import model_difference, model_digest
from harness.modelstore import PreparedModel
from harness.plan import Cell, Conversion
from harness.pool import WorkerPool
from harness.records import CellRecord, ConversionRecord, Outcome, OutputDelta, Verdict
from harness.store import Store

QUANT_METHOD = re.compile(r"Use (feature|weight) quantization method: (\w+)")  # what the tool really used


QUANTIZE_ATTEMPTS = 3  # a tool that fails or writes other bytes at random shows it in one of three far more often


def attempts(steps: list[ToolResult], outputs: list[Path], what: str = "quantizations") -> tuple[Outcome, str]:
    """The outcome of a tool run several times on the same input (judge.repeated decides), and how its outputs
    differ; the first output is kept, the others removed."""
    differences = [model_difference(outputs[0], other) for other, step in zip(outputs[1:], steps[1:], strict=True)
                   if step.passed and steps[0].passed]
    for other in outputs[1:]:
        other.unlink(missing_ok=True)
    judged, differs = judge.repeated([step.outcome.model_dump(mode="json") for step in steps], differences, what)
    return Outcome(**judged), differs


class Tasks:
    """Conversions and run cells of one plan, over a worker pool; converted models are kept in the store."""

    def __init__(self, pool: WorkerPool, models: Mapping[str, PreparedModel], matrix: Matrix, store: Store,
                 converter_flags: Mapping[str, list[str]]) -> None:
        self.pool, self.models, self.matrix, self.store = pool, models, matrix, store
        self.converter_flags = converter_flags
        self.clients = {toolchain: Client.pooled(pool, toolchain, matrix.run.timeouts, self._scrub)
                        for toolchain in pool.toolchains}
        self.conversions: dict[str, ConversionRecord] = {}  # by key: set by the scheduler before runs
        self._calibration_lock = threading.Lock()

    # -------------------------------------------------------------- conversions

    def convert(self, conversion: Conversion) -> ConversionRecord:
        """Convert (and, for a quantized variant, quantize) one model with one converter, each tool repeated."""
        model = self.models[conversion.model]
        known = self.converter_flags.get(conversion.converter, [])
        base = dict(key=conversion.key, converter=conversion.converter, model=conversion.model,
                    variant=conversion.variant, flags=list(conversion.flags), quantize=conversion.quantize,
                    ignored_flags=[f for f in conversion.flags if f.startswith("--") and f not in known])
        converted = (self.store.float_path if conversion.quantize else self.store.converted_path)(conversion.key)
        outputs = [converted, converted.with_suffix(".again1.mnn")]
        client = self.clients[conversion.converter]
        steps = [client.convert(model.onnx_path, target, conversion.flags, attempt)
                 for attempt, target in enumerate(outputs)]
        outcome, differs = attempts(steps, outputs, "conversions")
        step = steps[0]
        if outcome.verdict != Verdict.PASS or not conversion.quantize:
            return ConversionRecord(**base, outcome=outcome, reconversion_differs=differs, size_bytes=step.size,
                                    convert_s=step.seconds, wall_s=sum(s.wall_s for s in steps),
                                    model_digest=model_digest(converted) if outcome.verdict == Verdict.PASS else "")
        return self._quantize(conversion, model, converted, step, {**base, "reconversion_differs": differs})

    def _quantize(self, conversion: Conversion, model: PreparedModel, float_model: Path, converted: ToolResult,
                  base: dict) -> ConversionRecord:
        """Quantize QUANTIZE_ATTEMPTS times with MNN's tool, each alone in a fresh worker (the tool damages its
        process) and in other memory."""
        with self._calibration_lock:  # several converters may quantize the same model at once: they share samples
            config = write_calibration(model, Quantize(**conversion.quantize),
                                       calibration_dir(self.store.root, model, conversion.quantize))
        final = self.store.converted_path(conversion.key)
        outputs = [final] + [final.with_suffix(f".again{n}.mnn") for n in range(1, QUANTIZE_ATTEMPTS)]
        client = self.clients[conversion.converter]
        steps = [client.quantize(float_model, target, config, attempt) for attempt, target in enumerate(outputs)]
        outcome, differs = attempts(steps, outputs)
        first = steps[0]
        return ConversionRecord(**{**base, "reconversion_differs": base["reconversion_differs"] or differs},
                                outcome=outcome, size_bytes=first.size, float_size_bytes=converted.size,
                                quantized_with=dict(QUANT_METHOD.findall(first.log)),
                                convert_s=converted.seconds, quantize_s=first.seconds,
                                wall_s=converted.wall_s + sum(step.wall_s for step in steps),
                                model_digest=model_digest(final) if outcome.verdict == Verdict.PASS else "",
                                float_digest=model_digest(float_model))

    # -------------------------------------------------------------- runs

    def needs_run(self, cell: Cell) -> bool:
        """Whether a cell's outcome is a run's: its model converted, and the harness can feed it."""
        return self.conversions[cell.conversion.key].outcome.verdict == Verdict.PASS and not self.models[
            cell.model].run_skip

    def resolve(self, cell: Cell, run: CellRecord | None, reused_from: str = "") -> CellRecord:
        """A cell's record: its conversion's failure, a run it cannot have, or `run` (the record of the run of its
        model's bytes, maybe another converter's) as its own. A run of a model the tool under test does not write
        the same way twice is qualified (verdicts.unstable_conversion)."""
        conversion = self.conversions[cell.conversion.key]
        base = dict(key=cell.key, converter=cell.converter, runtime=cell.runtime, model=cell.model,
                    variant=cell.variant, api=cell.api, memory=cell.memory)
        if conversion.outcome.verdict != Verdict.PASS:
            return CellRecord(**base, outcome=conversion.outcome)
        if run is None:
            return CellRecord(**base, outcome=Outcome(verdict=Verdict.NOT_RUN, stage="run",
                                                      reason=self.models[cell.model].run_skip))
        update = {**base, "reused_from": reused_from}
        if conversion.reconversion_differs:
            update["outcome"] = verdicts.unstable_conversion(run.outcome, conversion.reconversion_differs)
        return run.model_copy(update=update)

    def run(self, cell: Cell) -> CellRecord:
        """Run one converted model under one runtime, API and memory mode, and judge its outputs."""
        conversion = self.conversions[cell.conversion.key]
        base = dict(key=cell.key, converter=cell.converter, runtime=cell.runtime, model=cell.model,
                    variant=cell.variant, api=cell.api, memory=cell.memory)
        model = self.models[cell.model]
        inputs, reference = model.load_inputs(), model.load_reference()  # read once per process
        result = self._run(cell, self.store.converted_path(conversion.key), inputs, list(reference),
                           self.matrix.run.repeat)
        if result.failure is not None:
            return CellRecord(**base, outcome=result.failure, wall_s=result.reply.wall_s if result.reply else 0.0)
        reply = result.reply
        tolerance = Tolerance(**model.tolerance) if model.tolerance else self.matrix.variant(cell.variant).tolerance
        deltas = [compare_output(name, result.repeats[0][name], reference[name], tolerance) for name in reference]
        differs = disagreement(result.repeats)
        outcome = verdicts.judge_outputs(deltas, differs, self._scrub(reply.log))
        return CellRecord(**base, outcome=outcome.model_copy(update={"note": reply.note}), outputs=deltas,
                          fed=reply.fed, repeats_agree=differs is None, load_s=reply.load_s, run_s=reply.run_s,
                          wall_s=reply.wall_s,
                          outputs_vs_float=self._against_float(cell, inputs, result.repeats[0], tolerance)
                          if conversion.quantize else [])

    def _run(self, cell: Cell, model: Path, inputs: dict, outputs: list[str], repeat: int) -> RunResult:
        settings = self.matrix.run
        return self.clients[cell.runtime].run(model, cell.api, inputs, outputs, settings.threads, settings.precision,
                                              cell.memory, repeat)

    def _against_float(self, cell: Cell, inputs: dict, outputs: dict, tolerance: Tolerance) -> list[OutputDelta]:
        """A quantized model's outputs against its float model's, run the same way (empty if that fails)."""
        result = self._run(cell, self.store.float_path(cell.conversion.key), inputs, list(outputs), 1)
        if result.failure is not None:
            return []
        return [compare_output(name, value, result.repeats[0][name], tolerance) for name, value in outputs.items()]

    def _scrub(self, text: str) -> str:
        """Native output without this run's own paths, so that where a run ran never shows in its results."""
        return text.replace(str(self.store.root), "<store>").replace(str(self.pool.scratch), "<scratch>")

