"""The HTML report: one self-contained page (no server, no external fetches) from a results document."""

from __future__ import annotations

from harness.records import Results, Verdict
from harness.report.markdown import environment
from harness.report.summary import MEANINGS, Summary, deltas_text, worst_delta

SHORT = {  # text, not emoji: the page must read the same whatever fonts the browser has
    Verdict.PASS: "pass", Verdict.WRONG_OUTPUT: "wrong", Verdict.NONDETERMINISTIC: "nondet",
    Verdict.CONVERT_ERROR: "convert", Verdict.QUANTIZE_ERROR: "quantize", Verdict.LOAD_ERROR: "load",
    Verdict.UNSUPPORTED_OP: "op", Verdict.SHAPE_ERROR: "shape", Verdict.CRASH: "crash", Verdict.TIMEOUT: "timeout",
    Verdict.UNCLASSIFIED: "unclassified",
}
COLUMNS = ("converter", "runtime", "model", "variant", "api", "memory", "verdict", "stage", "reason", "ops",
           "deltas", "log", "note")


def page_data(results: Results, summary: Summary) -> dict:
    """What the page's script works on: every cell as a compact row, with lookup lists."""
    model_ops = {m.name: [t[3:] for t in m.tags if t.startswith("op:")] for m in results.models}
    converters, runtimes = summary.converters, summary.runtimes
    models = sorted({c.model for c in results.cells})
    variants = [v.id for v in results.variants]
    rows = []
    for c in results.cells:
        deltas = worst_delta(c)
        if c.outputs_vs_float:
            deltas += f" · vs float: {deltas_text(c.outputs_vs_float)}"
        rows.append([converters.index(c.converter), runtimes.index(c.runtime), models.index(c.model),
                     variants.index(c.variant) if c.variant in variants else -1, c.api, c.memory,
                     c.outcome.verdict.value, c.outcome.stage, c.outcome.reason,
                     sorted(set(c.outcome.ops) | set(model_ops.get(c.model, []))), deltas, c.outcome.log_excerpt,
                     c.outcome.note])
    return {"columns": COLUMNS, "converters": converters, "runtimes": runtimes, "models": models,
            "variants": variants, "cells": rows, "ops": sorted({op for row in rows for op in row[9]}),
            "verdicts": {v.value: {"short": SHORT[v], "meaning": MEANINGS[v]} for v in Verdict}}


def render_html(results: Results) -> str:
    summary = Summary(results)
    return environment().get_template("report.html.j2").render(
        r=results, s=summary, data=page_data(results, summary), short=SHORT, meanings=MEANINGS, Verdict=Verdict)
