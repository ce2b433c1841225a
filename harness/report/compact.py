"""The compact views of a run: one symbol per pairing, per-model grids with identical pairings collapsed, numeric
drift, neutral cells, and the node suite's op rows with since / until and regressions between consecutive
versions. Each is computed from the results document alone."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

from harness.records import NEUTRAL_VERDICTS, CellRecord, OpSupport, Results, Verdict
from harness.report.findings import Finding, cause_of, counted
from harness.report.versions import VersionOrder

PAIR_SYMBOLS = {"pass": "✅", "drift": "〰️", "some": "🟡", "most": "🟥", "none": "·"}
PAIR_MEANINGS = {"pass": "every run passes", "drift": "every run passes, but an output drifts (see Numeric drift)",
                 "some": "some runs fail (under half)", "most": "most runs fail (half or more)",
                 "none": "no run counted"}
DRIFT_FACTOR = 10.0  # a passing cell drifts when its max |Δ| / max |ref| is this many times the best pairing's
DRIFT_FLOOR = 1e-4  # ... and above this


def ratio(cell: CellRecord) -> float | None:
    values = [d.mnn_rule_ratio for d in cell.outputs if d.mnn_rule_ratio is not None]
    return max(values) if values else None


@dataclass
class Drift:
    """One model and variant whose passing outputs differ markedly between pairings."""

    model: str
    variant: str
    best: float
    best_pair: tuple[str, str]
    worst: float
    worst_pair: tuple[str, str]
    drifting: set[tuple[str, str]]  # pairings at DRIFT_FACTOR x the best or more


def drifts(results: Results) -> list[Drift]:
    """Per model and variant, the best and worst max |Δ| / max |ref| of passing cells; largest spread first."""
    by_combo: dict[tuple[str, str], list[tuple[float, CellRecord]]] = defaultdict(list)
    for cell in results.cells:
        value = ratio(cell) if cell.outcome.verdict == Verdict.PASS else None
        if value is not None:
            by_combo[cell.model, cell.variant].append((value, cell))
    found = []
    for (model, variant), values in by_combo.items():
        best, best_cell = min(values, key=lambda item: item[0])
        worst, worst_cell = max(values, key=lambda item: item[0])
        limit = max(best * DRIFT_FACTOR, DRIFT_FLOOR)
        drifting = {(c.converter, c.runtime) for v, c in values if v >= limit}
        if drifting:
            found.append(Drift(model, variant, best, (best_cell.converter, best_cell.runtime), worst,
                               (worst_cell.converter, worst_cell.runtime), drifting))
    return sorted(found, key=lambda d: -d.worst / max(d.best, 1e-12))


@dataclass
class PairView:
    passed: int = 0
    total: int = 0
    drift: bool = False
    findings: list[Finding] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if not self.total:
            return "none"
        if self.passed == self.total:
            return "drift" if self.drift else "pass"
        return "most" if 2 * (self.total - self.passed) >= self.total else "some"

    @property
    def symbol(self) -> str:
        return PAIR_SYMBOLS[self.kind]


def pair_views(results: Results, findings: list[Finding], drift: list[Drift]) -> dict[tuple[str, str], PairView]:
    views: dict[tuple[str, str], PairView] = defaultdict(PairView)
    for cell in results.cells:
        view = views[cell.converter, cell.runtime]
        view.total += counted(cell)
        view.passed += cell.outcome.verdict == Verdict.PASS
    for d in drift:
        for pair in d.drifting:
            views[pair].drift = True
    hits: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for finding in findings:
        for cell in finding.cells:
            hits[cell.converter, cell.runtime][finding.number] += 1
    by_number = {f.number: f for f in findings}
    for pair, counts in hits.items():  # the findings with most cells on the pairing first
        views[pair].findings = [by_number[n] for n, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    return views


def failing_models(results: Results) -> list[str]:
    """Models with a failing cell, and every model the user brought (their own file): shown with a grid."""
    failing = {c.model for c in results.cells if counted(c) and c.outcome.verdict != Verdict.PASS}
    return [m.name for m in results.models if m.name in failing or "user" in m.tags]


def model_grid(results: Results, model: str, order: VersionOrder, numbers: dict[tuple, int]
               ) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """A model's verdicts: rows variant / API / memory, one column per group of pairings with identical
    verdicts in every row (labelled with its version ranges). Failures carry their finding's number."""
    cells = [c for c in results.cells if c.model == model]
    rows = sorted({(c.variant, c.api, c.memory) for c in cells},
                  key=lambda k: ([v.id for v in results.variants].index(k[0])
                                 if k[0] in [v.id for v in results.variants] else 99, k[1], k[2] != "normal", k[2]))
    at = {(c.variant, c.api, c.memory, c.converter, c.runtime): c for c in cells}
    columns: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    for k in order.converters:
        for r in order.runtimes:
            signature = tuple(_mark(at.get((*row, k, r)), numbers) for row in rows)
            columns[signature].append((k, r))
    heads = [" / ".join(order.where(pairs)) for pairs in columns.values()]
    body = [(" ".join(x for x in (variant, api, "" if memory == "normal" else f"{memory} memory") if x),
             [signature[i] for signature in columns]) for i, (variant, api, memory) in enumerate(rows)]
    return heads, body


def _mark(cell: CellRecord | None, numbers: dict[tuple, int]) -> str:
    if cell is None:
        return "·"
    from harness.report.summary import SYMBOLS

    symbol = SYMBOLS[cell.outcome.verdict]
    number = numbers.get(cause_of(cell))
    return f"{symbol}[{number}](#f{number})" if number else symbol


def neutral_groups(results: Results) -> list[tuple[str, str, str, int, list[str]]]:
    """Neutral cells grouped by verdict, API and message: (verdict, api, example reason, cells, models)."""
    from harness.report.findings import normalised

    groups: dict[tuple, list[CellRecord]] = defaultdict(list)
    for cell in results.cells:
        if cell.outcome.verdict in NEUTRAL_VERDICTS:
            groups[cell.outcome.verdict.value, cell.api, normalised(cell.outcome.reason)].append(cell)
    return sorted(((v, api, cells[0].outcome.reason, len(cells), sorted({c.model for c in cells}))
                   for (v, api, _), cells in groups.items()), key=lambda g: -g[3])


@dataclass
class OpRow:
    """A node-suite op / form whose outcome differs between pairings or fails somewhere."""

    support: OpSupport
    own: str  # cases passed / run on each toolchain's own pairing, equal neighbours collapsed: '6/8 (≤ 3.2.0) · 8/8'
    apis: str  # the newest own pairing per API when the APIs differ ('module 6/8 · session 4/8'), else ''
    since_converter: str
    until_converter: str  # the last converter where every case passes, when newer ones stop ('' if none)
    since_runtime: str
    until_runtime: str
    failing: list[str]  # version ranges of the pairings where a case fails
    uniform: bool  # every pairing passes the same cases: only the figure matters

    @property
    def figure(self) -> str:
        return self.own.split(" (")[0]


def op_rows(results: Results, order: VersionOrder) -> list[OpRow]:
    rows = []
    diagonal = [t for t in order.converters if t in order.runtimes]
    for o in results.op_support:
        pairs = {(k, r): o.pairs.get(f"{k} -> {r}") for k in order.converters for r in order.runtimes}
        ran = {p: s for p, s in pairs.items() if s is not None and s.run}
        full = {p for p, s in ran.items() if s.passed == s.run}
        if ran and len(full) == len(ran):
            continue
        conv_ok = [k for k in order.converters if any((k, r) in full for r in order.runtimes)]
        run_ok = [r for r in order.runtimes if any((k, r) in full for k in order.converters)]
        own = {t: f"{ran[t, t].passed}/{ran[t, t].run}" for t in diagonal if (t, t) in ran}
        rows.append(OpRow(o, _collapsed(own, diagonal, order), _api_figures(o, diagonal),
                          order.label(conv_ok[0]) if conv_ok else "", _until(conv_ok, order.converters, order),
                          order.label(run_ok[0]) if run_ok else "", _until(run_ok, order.runtimes, order),
                          order.where(set(ran) - full), len({(s.passed, s.run) for s in ran.values()}) == 1))
    return rows


def _collapsed(values: dict[str, str], ordered: list[str], order: VersionOrder) -> str:
    """Per-toolchain figures with toolchains of equal figure named as one range: '0/8 (≤ 3.2.0) · 2/8 (3.6.1)'; a
    single figure for all of them stands alone."""
    groups: dict[str, list[str]] = defaultdict(list)
    for toolchain in ordered:
        if toolchain in values:
            groups[values[toolchain]].append(toolchain)
    if len(groups) == 1:
        return next(iter(groups))
    return " · ".join(f"{figure} ({order.describe(ts, ordered)})" for figure, ts in groups.items())


def _api_figures(support: OpSupport, diagonal: list[str]) -> str:
    """Cases passed / run per API on the newest own pairing that ran, when the APIs differ there."""
    for toolchain in reversed(diagonal):
        figures = {api: pairs[f"{toolchain} -> {toolchain}"] for api, pairs in sorted(support.apis.items())
                   if f"{toolchain} -> {toolchain}" in pairs and pairs[f"{toolchain} -> {toolchain}"].run}
        if figures:
            if len({(s.passed, s.run) for s in figures.values()}) == 1:
                return ""
            return " · ".join(f"{api} {s.passed}/{s.run}" for api, s in figures.items())
    return ""


def _until(ok: list[str], ordered: list[str], order: VersionOrder) -> str:
    return order.label(ok[-1]) if ok and ok[-1] != ordered[-1] else ""


def regressions(results: Results, order: VersionOrder) -> list[tuple[str, str, list[str], int, int]]:
    """Between consecutive versions on their own pairings: (older, newer, ops fully passing on the older and
    not on the newer, cases passing on the older, of them failing on the newer)."""
    diagonal = [t for t in order.converters if t in order.runtimes]
    passes: dict[str, dict[str, bool]] = defaultdict(dict)
    for cell in results.cells:
        if cell.converter == cell.runtime and counted(cell):
            passes[cell.converter][cell.model] = passes[cell.converter].get(cell.model, True) and (
                cell.outcome.verdict == Verdict.PASS)
    found = []
    for old, new in pairwise(diagonal):
        ops = sorted({f"{o.op} ({o.form})" for o in results.op_support
                      if (a := o.pairs.get(f"{old} -> {old}")) and a.run and a.passed == a.run
                      and (b := o.pairs.get(f"{new} -> {new}")) and b.run and b.passed < b.run})
        was = [case for case, ok in passes[old].items() if ok]
        lost = sum(passes[new].get(case) is False for case in was)
        found.append((order.label(old), order.label(new), ops, len(was), lost))
    return found


@dataclass
class QuantGroup:
    """Post-training quantization of one model and variant by a group of converters that behave alike."""

    model: str
    variant: str
    converters: str  # version range
    quantized: str  # '✅', '✅ (the tool used EMA)', or the failure
    size: str
    runs: list[str]  # '✅ ok / ✅ ok on ≥ 3.0.1' per group of runtimes alike
    worst: str  # the module API's worst cosine / relative L2 error against onnxruntime


def quant_groups(results: Results, order: VersionOrder) -> list[QuantGroup]:
    from harness.report.summary import QUANT_CATEGORIES, SYMBOLS, deltas_text, quant_category, quantization_rows

    by_signature: dict[tuple, list] = defaultdict(list)
    for q in quantization_rows(results):
        c = q.conversion
        if c.outcome.verdict == Verdict.PASS:
            used = c.quantized_with.get("feature", c.quantize.get("feature"))
            quantized = "✅" + (f" (the tool used {used})" if used != c.quantize.get("feature") else "")
        else:
            quantized = f"{SYMBOLS[c.outcome.verdict]} {c.outcome.verdict.value} at {c.outcome.stage}"
        runs: dict[str, list[str]] = defaultdict(list)
        if c.outcome.verdict == Verdict.PASS:
            for runtime in order.runtimes:
                cells = sorted(q.runs.get(runtime, []), key=lambda cell: (cell.api, cell.memory))
                if cells:
                    runs[" / ".join(QUANT_CATEGORIES[quant_category(cell)] for cell in cells)].append(runtime)
        signature = (q.model, q.variant, quantized,
                     tuple((text, tuple(ids)) for text, ids in runs.items()))
        by_signature[signature].append(q)
    groups = []
    for (model, variant, quantized, runs), members in by_signature.items():
        ratios = sorted(q.size_ratio for q in members if q.size_ratio)
        size = (f"{100 * ratios[0]:.0f}%" if ratios and ratios[0] == ratios[-1]
                else f"{100 * ratios[0]:.0f}–{100 * ratios[-1]:.0f}%" if ratios else "")
        module = [cell for q in members for cells in q.runs.values() for cell in cells
                  if cell.api == "module" and cell.outputs]
        worst = min(module, key=lambda cell: min((d.cosine for d in cell.outputs if d.cosine is not None),
                                                 default=1.0), default=None)
        groups.append(QuantGroup(model, variant, order.describe([q.converter for q in members], order.converters),
                                 quantized, size,
                                 [f"{text} on {order.describe(ids, order.runtimes)}" for text, ids in runs],
                                 deltas_text(worst.outputs) if worst else ""))
    return groups


@dataclass
class DynamicRow:
    """A weight-quantized model and variant at normal and at low memory (dynamic quantization), module API."""

    model: str
    variant: str
    pairings: int
    normal_passed: int
    low_passed: int
    low_only_fails: list[str]  # version ranges of the pairings that pass at normal memory and fail at low
    worst_low: str
    worst_normal: str


def dynamic_summary(results: Results, order: VersionOrder) -> list[DynamicRow]:
    from harness.report.summary import deltas_text, dynamic_rows

    grouped: dict[tuple[str, str], list] = defaultdict(list)
    for model, variant, conv, run, low, normal in dynamic_rows(results):
        grouped[model, variant].append((conv, run, low, normal))
    rows = []
    for (model, variant), items in grouped.items():
        def cos(cell: CellRecord) -> float:
            return min((d.cosine for d in cell.outputs if d.cosine is not None), default=1.0)

        worst_low = min((low for _, _, low, _ in items), key=cos)
        worst_normal = min((normal for _, _, _, normal in items), key=cos)
        rows.append(DynamicRow(
            model, variant, len(items), sum(n.outcome.verdict == Verdict.PASS for *_, n in items),
            sum(low.outcome.verdict == Verdict.PASS for _, _, low, _ in items),
            order.where({(k, r) for k, r, low, normal in items
                         if normal.outcome.verdict == Verdict.PASS and low.outcome.verdict != Verdict.PASS}),
            deltas_text(worst_low.outputs), deltas_text(worst_normal.outputs)))
    return rows


@dataclass
class OnnxruntimeGroup:
    """Node-suite cases where onnxruntime gives one kind of opinion against the case's expected outputs."""

    opinion: str  # one case's opinion, as an example
    ops: list[str]
    cases: list[str]


def onnxruntime_groups(results: Results) -> list[OnnxruntimeGroup]:
    """Cases onnxruntime does not reproduce, grouped by its normalised opinion; most cases first."""
    from harness.report.findings import normalised

    groups: dict[str, OnnxruntimeGroup] = {}
    for support in results.op_support:
        for case, opinion in support.onnxruntime_flags.items():
            group = groups.setdefault(normalised(opinion), OnnxruntimeGroup(opinion, [], []))
            group.cases.append(case)
            if support.op not in group.ops:
                group.ops.append(support.op)
    return sorted(groups.values(), key=lambda g: (-len(g.cases), g.opinion))
