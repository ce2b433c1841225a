"""The Markdown compatibility table, rendered from a results document with Jinja2."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

from harness.records import Results, Verdict
from harness.report import compact
from harness.report.findings import find
from harness.report.summary import (
    MEANINGS,
    QUANT_CATEGORIES,
    SYMBOLS,
    Summary,
    deltas_text,
    quant_category,
    worst_delta,
)
from harness.report.versions import VersionOrder


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def environment() -> Environment:
    env = Environment(loader=PackageLoader("harness.report"), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(cell=_cell, delta=worst_delta, symbol=lambda v: SYMBOLS[Verdict(v)], deltas=deltas_text,
                       category=lambda cell: QUANT_CATEGORIES[quant_category(cell)])
    return env


def context(results: Results, baseline: Results | None = None) -> dict:
    """What both renderers show: findings (against `baseline`, when given), the compact grid, drift."""
    order = VersionOrder(results)
    findings = find(results, baseline, order)
    drift = compact.drifts(results)
    return dict(r=results, s=Summary(results), o=order, findings=findings, baseline=baseline, drift=drift,
                views=compact.pair_views(results, findings, drift), neutral=compact.neutral_groups(results),
                pair_symbols=compact.PAIR_SYMBOLS, pair_meanings=compact.PAIR_MEANINGS, symbols=SYMBOLS,
                meanings=MEANINGS, Verdict=Verdict)


def render_markdown(results: Results, baseline: Results | None = None, ctx: dict | None = None) -> str:
    """results.md: findings first; `baseline` (the previous run) marks the findings it did not have; `ctx` is
    `context(results, baseline)` when the caller has it."""
    ctx = ctx or context(results, baseline)
    order, numbers = ctx["o"], {f.cause: f.number for f in ctx["findings"]}
    if results.suite == "onnx-node":
        return environment().get_template("onnx-node.md.j2").render(
            **ctx, ops=compact.op_rows(results, order), regressions=compact.regressions(results, order),
            onnxruntime=compact.onnxruntime_groups(results),
            diagonal=[order.label(t) for t in order.converters if t in order.runtimes])
    shown = compact.failing_models(results)
    return environment().get_template("results.md.j2").render(
        **ctx, grid_models=shown, passing_models=[m.name for m in results.models if m.name not in shown],
        model_grid=lambda model: compact.model_grid(results, model, order, numbers),
        quant=compact.quant_groups(results, order), dynamic=compact.dynamic_summary(results, order),
        categories=QUANT_CATEGORIES)


def render_diff(diff, drift: float, limit: int = 200) -> str:
    """Markdown for a run-to-run diff, fit for a GitHub job summary."""
    return environment().get_template("diff.md.j2").render(d=diff, drift=drift, limit=limit)
