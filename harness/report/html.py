"""The HTML report: one self-contained page (no server, no external fetches) from a results document."""

from __future__ import annotations

import base64
import gzip
import json

from harness.records import NEUTRAL_VERDICTS, CellRecord, Results, Verdict
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
COLUMNS = ("converter", "runtime", "model", "variant", "api", "memory", "entry")  # a cell, as the page expands it
ENTRY = ("verdict", "stage", "reason", "ops", "deltas", "log", "note")  # what a cell shows beyond where it is


def page_data(results: Results, order: VersionOrder) -> dict:
    """What the page's script works on. Cells repeat: of 650,000 node-suite cells on 11 toolchains, a few thousand
    differ in what they show. So `entries` holds each distinct verdict, stage, reason, ops, deltas, log and note
    once (texts as indices into `strings`; entry 0, empty, is every pass), and `groups` the cells, one list per
    (model, variant, api, memory) of an entry index (or -1) per pairing, converters x runtimes in order. The
    script expands them into cells (COLUMNS): the page of such a run stays under 2 MB."""
    model_ops = {m.name: [t[3:] for t in m.tags if t.startswith("op:")] for m in results.models}
    converters, runtimes = order.converters, order.runtimes
    models = sorted({c.model for c in results.cells})
    variants = [v.id for v in results.variants]
    apis = sorted({c.api for c in results.cells})
    memories = sorted({c.memory for c in results.cells}, key=lambda m: (m != "normal", m))
    index = {"model": {name: i for i, name in enumerate(models)}, "api": {name: i for i, name in enumerate(apis)},
             "variant": {name: i for i, name in enumerate(variants)},
             "memory": {name: i for i, name in enumerate(memories)}}
    slot = {(k, r): i * len(runtimes) + j for i, k in enumerate(converters) for j, r in enumerate(runtimes)}
    strings: dict[str, int] = {}  # stage, reason, deltas, log and note repeat across entries: each is kept once
    entries: dict[tuple, int] = {(): 0}
    shown: dict[tuple, int] = {}  # a cell's outcome and outputs objects -> its entry: cells read back share them

    def text(value: str) -> int:
        return strings.setdefault(value, len(strings))

    def entry(c: CellRecord) -> int:
        if c.outcome.verdict == Verdict.PASS:
            return 0
        same = (id(c.outcome), id(c.outputs), id(c.outputs_vs_float))
        if same not in shown:
            deltas = worst_delta(c)
            if c.outputs_vs_float:
                deltas += f" · vs float: {deltas_text(c.outputs_vs_float)}"
            o = c.outcome
            row = (o.verdict.value, text(o.stage), text(o.reason), tuple(sorted(o.ops)), text(deltas),
                   text(o.log_excerpt), text(o.note))
            shown[same] = entries.setdefault(row, len(entries))
        return shown[same]

    groups: dict[tuple, list[int]] = {}
    for c in results.cells:
        key = (index["model"][c.model], index["variant"].get(c.variant, -1), index["api"][c.api],
               index["memory"][c.memory])
        groups.setdefault(key, [-1] * len(slot))[slot[c.converter, c.runtime]] = entry(c)
    ops = sorted({op for ops in model_ops.values() for op in ops} | {op for c in results.cells for op in c.outcome.ops})
    return {"columns": COLUMNS, "entry": ENTRY, "converters": [order.label(t) for t in converters],
            "runtimes": [order.label(t) for t in runtimes], "models": models,
            "model_ops": [model_ops.get(m, []) for m in models],
            "variants": variants, "apis": apis, "memories": memories, "entries": list(entries),
            "groups": [[*key, slots] for key, slots in groups.items()], "ops": ops, "strings": list(strings),
            "verdicts": {v.value: {"short": SHORT[v], "meaning": MEANINGS[v], "neutral": v in NEUTRAL_VERDICTS}
                         for v in Verdict}}


def packed(data: dict) -> str:
    """The page data as base64 of gzipped JSON, which the page unpacks with the browser's DecompressionStream: a
    run's cells repeat so much that this makes the page ~8x smaller, and it stays one file that opens from disk."""
    text = json.dumps(data, separators=(",", ":"))
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()


def render_html(results: Results, baseline: Results | None = None, ctx: dict | None = None) -> str:
    """results.html; `ctx` is `markdown.context(results, baseline)` when the caller has it."""
    ctx = ctx or context(results, baseline)
    order = ctx["o"]
    ops = compact.op_rows(results, order) if results.op_support else []
    data = page_data(results, order)
    return environment().get_template("report.html.j2").render(
        **ctx, data=data, packed=packed(data), short=SHORT, ops=ops,
        diagonal=[order.label(t) for t in order.converters if t in order.runtimes])
