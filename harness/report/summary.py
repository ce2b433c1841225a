"""Aggregates of a results document that every renderer shows: verdict symbols and counts, the per-pair tallies of
the HTML grid, unavailable toolchains, and a cell's most telling delta."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from harness.records import NEUTRAL_VERDICTS, CellRecord, Results, Verdict

SYMBOLS = {
    Verdict.PASS: "✅", Verdict.WRONG_OUTPUT: "❌", Verdict.NONDETERMINISTIC: "🎲", Verdict.CONVERT_ERROR: "🔧",
    Verdict.QUANTIZE_ERROR: "🧮",
    Verdict.LOAD_ERROR: "📂", Verdict.UNSUPPORTED_OP: "🚫", Verdict.SHAPE_ERROR: "📐", Verdict.CRASH: "💥",
    Verdict.TIMEOUT: "⏱️", Verdict.UNCLASSIFIED: "❓", Verdict.OUT_OF_MEMORY: "🧨", Verdict.WRONG_SHAPE: "🔲",
    Verdict.API_UNSUPPORTED: "➖", Verdict.NOT_RUN: "⏭️",
}
MEANINGS = {
    Verdict.PASS: "ran, and every output is within the variant's tolerance; repeated runs agree bitwise",
    Verdict.WRONG_OUTPUT: "ran, but an output is beyond tolerance, has the wrong shape, or has NaN/Inf "
                          "where the reference has none",
    Verdict.NONDETERMINISTIC: "repeated runs of the same loaded model gave different outputs, or the converter "
                              "writes a different model each time (so a pass is luck)",
    Verdict.CONVERT_ERROR: "the converter produced no model; unsupported ONNX ops are named when the log says",
    Verdict.QUANTIZE_ERROR: "MNN's quantization tool wrote no model (a crash or hang of it is crash or timeout at "
                            "the quantize stage)",
    Verdict.LOAD_ERROR: "the runtime could not load the model or bind its inputs (e.g. an input not found, "
                        "an invalid buffer)",
    Verdict.UNSUPPORTED_OP: "the runtime loaded the model but cannot execute one of its ops",
    Verdict.SHAPE_ERROR: "shape inference or resizing failed",
    Verdict.CRASH: "the worker process died (the signal is given); the cell's last native output is kept",
    Verdict.TIMEOUT: "the worker did not answer within the time limit and was killed",
    Verdict.UNCLASSIFIED: "failed with a message no pattern in harness/patterns.yaml explains: read the excerpt",
    Verdict.OUT_OF_MEMORY: "the worker went over its memory cap (run.memory_limit_mb in matrix.yaml) and was killed",
    Verdict.WRONG_SHAPE: "ran, but an output's shape (or dtype) differs from the reference; both are given",
    Verdict.API_UNSUPPORTED: "this Python API of this MNN version documents that it cannot run this model or take "
                             "this input dtype (not counted against the op or the pairing)",
    Verdict.NOT_RUN: "converted, but not run: the harness cannot feed its inputs (the reason says why; not counted)",
}


@dataclass
class PairCount:
    passed: int = 0
    total: int = 0
    verdicts: Counter = field(default_factory=Counter)


class Summary:
    """Computed once from Results; every figure it gives is a count of cells in the results."""

    def __init__(self, results: Results) -> None:
        self.results = results
        self.unavailable = [t for t in results.toolchains if t.status != "ok"]
        self.grid: dict[tuple[str, str], PairCount] = defaultdict(PairCount)
        for cell in results.cells:  # an API's documented limit or a run not made says nothing of the pairing
            count = self.grid[cell.converter, cell.runtime]
            count.total += cell.outcome.verdict not in NEUTRAL_VERDICTS
            count.passed += cell.outcome.verdict == Verdict.PASS
            count.verdicts[cell.outcome.verdict] += 1
        self.verdicts = Counter(cell.outcome.verdict for cell in results.cells)


def worst_delta(cell: CellRecord) -> str:
    """The most telling number of a run: the worst MNN-rule ratio and cosine over its outputs."""
    ratios = [d.mnn_rule_ratio for d in cell.outputs if d.mnn_rule_ratio is not None]
    cosines = [d.cosine for d in cell.outputs if d.cosine is not None]
    nans = sum(d.nan + d.inf for d in cell.outputs)
    parts = []
    if ratios:
        parts.append(f"max|Δ|/max|ref| {max(ratios):.2g}")
    if cosines:
        parts.append(f"cos {min(cosines):.6g}")
    if nans:
        parts.append(f"{nans} NaN/Inf")
    return ", ".join(parts)


QUANT_CATEGORIES = {"ok": "✅ ok", "drifted": "〰️ drifted", "nan": "🕳️ NaN/Inf", "failed": "❌ failed"}


def quant_category(cell: CellRecord) -> str:
    """ok, drifted (ran but beyond tolerance), nan (NaN/Inf where the reference is finite), or failed."""
    if cell.outcome.verdict == Verdict.PASS:
        return "ok"
    if cell.outcome.verdict == Verdict.WRONG_OUTPUT:
        return "nan" if any(d.nan + d.inf > d.reference_nan + d.reference_inf for d in cell.outputs) else "drifted"
    return "failed"


@dataclass
class QuantRow:
    """One model x quantized variant x converter: did it quantize, and how did it run on each runtime."""

    model: str
    variant: str
    converter: str
    conversion: object  # ConversionRecord
    runs: dict[str, list[CellRecord]]  # runtime -> its cells (each API, each memory mode)

    @property
    def size_ratio(self) -> float | None:
        c = self.conversion
        return c.size_bytes / c.float_size_bytes if c.size_bytes and c.float_size_bytes else None


def quantization_rows(results: Results) -> list[QuantRow]:
    conversions = {(c.model, c.variant, c.converter): c for c in results.conversions if c.quantize}
    rows = {key: QuantRow(*key, conversion, defaultdict(list)) for key, conversion in conversions.items()}
    for cell in results.cells:
        row = rows.get((cell.model, cell.variant, cell.converter))
        if row is not None:
            row.runs[cell.runtime].append(cell)
    return list(rows.values())


def dynamic_rows(results: Results) -> list[tuple[str, str, str, str, CellRecord, CellRecord]]:
    """Weight-quantized models run at normal and at low memory (dynamic quantization): (model, variant,
    converter, runtime, normal cell, low cell), module API."""
    by_key = {(c.model, c.variant, c.converter, c.runtime, c.api, c.memory): c for c in results.cells}
    return [(m, v, conv, run, cell, by_key[m, v, conv, run, api, "normal"])
            for (m, v, conv, run, api, memory), cell in by_key.items()
            if memory == "low" and api == "module" and (m, v, conv, run, api, "normal") in by_key]


def deltas_text(deltas: list) -> str:
    """Worst cosine and relative L2 error over the outputs, e.g. 'cos 0.9987 · rel 0.070'."""
    cosines = [d.cosine for d in deltas if d.cosine is not None]
    errors = [d.rel_l2 for d in deltas if d.rel_l2 is not None]
    if not cosines and not errors:
        return ""
    return f"cos {min(cosines):.4f} · rel {max(errors):.3f}" if cosines and errors else ""
