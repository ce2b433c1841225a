"""The Markdown compatibility table, rendered from a results document with Jinja2."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

from harness.records import Results, Verdict
from harness.report.summary import (
    MEANINGS,
    QUANT_CATEGORIES,
    SYMBOLS,
    Summary,
    deltas_text,
    dynamic_rows,
    quant_category,
    quantization_rows,
    worst_delta,
)


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def environment() -> Environment:
    env = Environment(loader=PackageLoader("harness.report"), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(cell=_cell, delta=worst_delta, symbol=lambda v: SYMBOLS[Verdict(v)], deltas=deltas_text,
                       category=lambda cell: QUANT_CATEGORIES[quant_category(cell)])
    return env


def render_markdown(results: Results) -> str:
    template = "onnx-node.md.j2" if results.suite == "onnx-node" else "results.md.j2"
    return environment().get_template(template).render(
        r=results, s=Summary(results), symbols=SYMBOLS, meanings=MEANINGS, Verdict=Verdict,
        quantized=quantization_rows(results), dynamic=dynamic_rows(results), categories=QUANT_CATEGORIES)


def render_diff(diff, drift: float, limit: int = 200) -> str:
    """Markdown for a run-to-run diff, fit for a GitHub job summary."""
    return environment().get_template("diff.md.j2").render(d=diff, drift=drift, limit=limit)
