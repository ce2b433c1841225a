"""Renderers: tables made from a results document alone, never from a live run."""

from __future__ import annotations

import gc
import gzip
import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import product
from operator import attrgetter
from pathlib import Path
from typing import TypeVar

from harness.records import CellRecord, ConversionRecord, Results

COMPACT_ABOVE = 5000  # cells: larger documents are gzipped, without per-cell keys and timings
PLAIN_UP_TO = 1 << 20  # bytes: a plain document above this is compacted too (the llm suite's cells are large)
HTML_UP_TO = 1_000_000  # cells: the page carries them grouped and gzipped; 11 toolchains' node suite ~0.6 MB
# random-looking (or, reused_from, naming the earlier run a cell was taken from), so they dominate a compressed file
PER_CELL_BOOKKEEPING = {"key", "load_s", "run_s", "wall_s", "reused_from"}
PER_CONVERSION_BOOKKEEPING = {"key", "convert_s", "quantize_s", "wall_s", "model_digest", "float_digest"}


RecordT = TypeVar("RecordT", CellRecord, ConversionRecord)
# a large document's records as tables: field -> (identity fields naming a group, identity fields naming a slot in
# it, bookkeeping left out). Records of equal content (most of them: a pass is a pass) are written once.
TABLES = {"cells": (("model", "variant", "api", "memory"), ("converter", "runtime"), PER_CELL_BOOKKEEPING),
          "conversions": (("model", "variant"), ("converter",), PER_CONVERSION_BOOKKEEPING)}


def document(results: Results) -> tuple[str, bytes]:
    """The results document's file name and content. A large run's (by cells or bytes) is gzipped, without per-cell
    and per-conversion keys and timings (the store has them; phase timings stay) or fields at their default value,
    and its cells and conversions as tables (`table`): an 11-toolchain node-suite run's is 0.5 MB instead of 7. It
    reads back (`read_results`) to the same records, in canonical order."""
    if len(results.cells) <= COMPACT_ABOVE:
        plain = results.model_dump_json(indent=1).encode()
        if len(plain) <= PLAIN_UP_TO:
            return "results.json", plain
    from harness.merge import in_order

    with no_cycle_collection():
        results = in_order(results)
        tables = {name: table(getattr(results, name), *layout) for name, layout in TABLES.items()}
    if any(t is None for t in tables.values()):  # two records of one identity: keep them all, as plain records
        data = results.model_dump_json(exclude_defaults=True, exclude={
            "cells": {"__all__": PER_CELL_BOOKKEEPING},
            "conversions": {"__all__": PER_CONVERSION_BOOKKEEPING}}).encode()
    else:
        rest = json.loads(results.model_dump_json(exclude_defaults=True, exclude=set(TABLES)))
        data = json.dumps({**rest, **{f"{name}_table": t for name, t in tables.items()}},
                          separators=(",", ":")).encode()
    return "results.json.gz", gzip.compress(data, mtime=0)


def table(records: list[RecordT], rows: tuple[str, ...], slots: tuple[str, ...], bookkeeping: set[str]) -> dict | None:
    """Records as {"row", "slot": their identity fields, "slots": every slot's values (the product of each slot
    field's values in order of appearance), "records": the distinct records without identity, bookkeeping and
    defaults, "groups": [*row values, [record index per slot, -1 where none]]}, groups in order of appearance.
    None when two records have one identity."""
    exclude = {*rows, *slots, *bookkeeping}
    identities = list(map(attrgetter(*slots, *rows), records))  # always a tuple: slots and rows are 2+ names
    values: list[dict[str, int]] = [{} for _ in slots]
    for identity in identities:
        for seen, value in zip(values, identity, strict=False):
            seen.setdefault(value, len(seen))
    columns = {key: i for i, key in enumerate(product(*values))}
    distinct: dict[bytes, int] = {}
    groups: dict[tuple, list[int]] = {}
    serialise = records[0].__pydantic_serializer__.to_json if records else None
    for record, identity in zip(records, identities, strict=True):
        group = groups.setdefault(identity[len(slots):], [-1] * len(columns))
        column = columns[identity[:len(slots)]]
        if group[column] != -1:
            return None
        group[column] = distinct.setdefault(serialise(record, exclude=exclude, exclude_defaults=True), len(distinct))
    return {"row": rows, "slot": slots, "slots": list(columns), "records": [json.loads(r) for r in distinct],
            "groups": [[*key, indices] for key, indices in groups.items()]}


def expand(data: dict, kind: type[RecordT]) -> list[RecordT]:
    """The records a `table` holds, in its groups' order. Each distinct record is validated once and copied with
    each cell's identity, so 650,000 cells read in a few seconds."""
    rows, slots = data["row"], data["slot"]
    blank = dict.fromkeys((*rows, *slots), "")
    prototypes = [kind.model_validate({**record, **blank}) for record in data["records"]]
    columns = [dict(zip(slots, values, strict=True)) for values in data["slots"]]
    records = []
    for *key, indices in data["groups"]:
        row = dict(zip(rows, key, strict=True))
        records += [prototypes[index].model_copy(update={**row, **columns[i]})
                    for i, index in enumerate(indices) if index >= 0]
    return records


def write_results(results: Results, out: Path, baseline: Results | None = None) -> list[Path]:
    """Write the results document, results.md and (up to HTML_UP_TO cells) results.html, each atomically;
    `baseline` (the previous run) marks new findings. Files of the other size class left from an earlier run are
    removed; returns the paths written."""
    from harness.report.html import render_html
    from harness.report.markdown import context, render_markdown

    out.mkdir(parents=True, exist_ok=True)
    with no_cycle_collection():
        name, data = document(results)
        shown = context(results, baseline)  # findings, grid and drift: one computation for both pages
        files = {name: data, "results.md": render_markdown(results, baseline, shown).encode()}
        if len(results.cells) <= HTML_UP_TO:
            files["results.html"] = render_html(results, baseline, shown).encode()
    for stale in {"results.json", "results.json.gz", "results.html"} - set(files):
        (out / stale).unlink(missing_ok=True)
    for file_name, content in files.items():
        partial = out / f".{file_name}.partial"
        partial.write_bytes(content)
        partial.replace(out / file_name)
    return [out / file_name for file_name in files]


def read_results(source: str | Path) -> Results:
    """A results document from a path or an http(s) URL, plain or gzipped; ValueError if it is not one."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        with urllib.request.urlopen(text, timeout=60) as response:
            data = response.read()
    else:
        data = Path(text).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with no_cycle_collection():
        if b'"cells_table":' not in data:  # a plain document (or an older compact one): validated as it is
            return Results.model_validate_json(data)
        fields = json.loads(data)
        tables = {name: fields.pop(f"{name}_table") for name in TABLES}
        results = Results.model_validate({**fields, **{name: [] for name in TABLES}})
        from harness.merge import in_order

        return in_order(results.model_copy(update={"cells": expand(tables["cells"], CellRecord),
                                                   "conversions": expand(tables["conversions"], ConversionRecord)}))


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Hundreds of thousands of new records, none of them garbage: without this, Python's cycle collector runs over
    them again and again, which doubles the time a large document takes to read."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
