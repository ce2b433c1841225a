"""The HTML report: one self-contained page (no server, no external fetches) from a results document."""

from __future__ import annotations

import base64
import gzip
import json

from harness.records import NEUTRAL_VERDICTS, Results, Verdict
from harness.report import compact
from harness.report.markdown import context, environment
from harness.report.summary import MEANINGS, deltas_text, worst_delta
from harness.report.versions import VersionOrder

SHORT = {  # text, not emoji: the page must read the same whatever fonts the browser has
    Verdict.PASS: "pass", Verdict.WRONG_OUTPUT: "wrong", Verdict.NONDETERMINISTIC: "nondet",
    Verdict.CONVERT_ERROR: "convert", Verdict.QUANTIZE_ERROR: "quantize", Verdict.LOAD_ERROR: "load",
    Verdict.UNSUPPORTED_OP: "op", Verdict.SHAPE_ERROR: "shape", Verdict.CRASH: "crash", Verdict.TIMEOUT: "timeout",
    Verdict.UNCLASSIFIED: "unclassified", Verdict.OUT_OF_MEMORY: "oom", Verdict.WRONG_SHAPE: "shape!",
    Verdict.API_UNSUPPORTED: "api", Verdict.NOT_RUN: "not run",
}
COLUMNS = ("converter", "runtime", "model", "variant", "api", "memory", "verdict", "stage", "reason", "ops",
           "deltas", "log", "note")


def page_data(results: Results, order: VersionOrder) -> dict:
    """What the page's script works on: every cell as a compact row. A passing cell is only its indices
    (converter, runtime, model, variant, api, memory); any other also has verdict, stage, reason, ops, deltas, log
    and note, the texts as indices into one list of distinct strings, so a node-suite run of 100,000 cells stays a
    page of a few MB."""
    model_ops = {m.name: [t[3:] for t in m.tags if t.startswith("op:")] for m in results.models}
    converters, runtimes = order.converters, order.runtimes
    models = sorted({c.model for c in results.cells})
    variants = [v.id for v in results.variants]
    apis = sorted({c.api for c in results.cells})
    memories = sorted({c.memory for c in results.cells}, key=lambda m: (m != "normal", m))
    position = {name: i for i, name in enumerate(models)}
    strings: dict[str, int] = {}  # stage, reason, deltas, log and note repeat across cells: each is kept once

    def text(value: str) -> int:
        return strings.setdefault(value, len(strings))

    rows = []
    for c in results.cells:
        row = [converters.index(c.converter), runtimes.index(c.runtime), position[c.model],
               variants.index(c.variant) if c.variant in variants else -1, apis.index(c.api), memories.index(c.memory)]
        if c.outcome.verdict != Verdict.PASS:
            deltas = worst_delta(c)
            if c.outputs_vs_float:
                deltas += f" · vs float: {deltas_text(c.outputs_vs_float)}"
            row += [c.outcome.verdict.value, text(c.outcome.stage), text(c.outcome.reason), sorted(c.outcome.ops),
                    text(deltas), text(c.outcome.log_excerpt), text(c.outcome.note)]
        rows.append(row)
    ops = sorted({op for ops in model_ops.values() for op in ops} | {op for c in results.cells for op in c.outcome.ops})
    return {"columns": COLUMNS, "converters": [order.label(t) for t in converters],
            "runtimes": [order.label(t) for t in runtimes], "models": models,
            "model_ops": [model_ops.get(m, []) for m in models],
            "variants": variants, "apis": apis, "memories": memories, "cells": rows, "ops": ops,
            "strings": list(strings),
            "verdicts": {v.value: {"short": SHORT[v], "meaning": MEANINGS[v], "neutral": v in NEUTRAL_VERDICTS}
                         for v in Verdict}}


def packed(data: dict) -> str:
    """The page data as base64 of gzipped JSON, which the page unpacks with the browser's DecompressionStream: a
    run's cells repeat so much that this makes the page ~8x smaller, and it stays one file that opens from disk."""
    text = json.dumps(data, separators=(",", ":"))
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()


def render_html(results: Results, baseline: Results | None = None) -> str:
    ctx = context(results, baseline)
    order = ctx["o"]
    ops = compact.op_rows(results, order) if results.op_support else []
    data = page_data(results, order)
    return environment().get_template("report.html.j2").render(
        **ctx, data=data, packed=packed(data), short=SHORT, ops=ops,
        diagonal=[order.label(t) for t in order.converters if t in order.runtimes])
