"""Renderers: tables made from a results document alone, never from a live run."""

from __future__ import annotations

import gzip
import urllib.request
from pathlib import Path

from harness.records import Results

COMPACT_ABOVE = 5000  # cells: larger documents are gzipped, without per-cell keys and timings
HTML_UP_TO = 1_000_000  # cells: the page carries them gzipped (~9 bytes a cell): 6 toolchains' node suite ~2 MB
PER_CELL_BOOKKEEPING = {"key", "load_s", "run_s", "wall_s"}  # random-looking, so they dominate a compressed file
PER_CONVERSION_BOOKKEEPING = {"key", "convert_s", "quantize_s", "wall_s"}


def document(results: Results) -> tuple[str, bytes]:
    """The results document's file name and content. A large run's leaves out per-cell and per-conversion keys and
    timings (the journal has them; phase timings stay) and every field at its default value, which makes a
    node-suite run several times smaller; it reads back to the same records."""
    if len(results.cells) <= COMPACT_ABOVE:
        return "results.json", results.model_dump_json(indent=1).encode()
    data = results.model_dump_json(exclude_defaults=True, exclude={
        "cells": {"__all__": PER_CELL_BOOKKEEPING}, "conversions": {"__all__": PER_CONVERSION_BOOKKEEPING}}).encode()
    return "results.json.gz", gzip.compress(data, mtime=0)


def write_results(results: Results, out: Path, baseline: Results | None = None) -> list[Path]:
    """Write the results document, results.md and (up to HTML_UP_TO cells) results.html, each atomically;
    `baseline` (the previous run) marks new findings. Files of the other size class left from an earlier run are
    removed; returns the paths written."""
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    out.mkdir(parents=True, exist_ok=True)
    name, data = document(results)
    files = {name: data, "results.md": render_markdown(results, baseline).encode()}
    if len(results.cells) <= HTML_UP_TO:
        files["results.html"] = render_html(results, baseline).encode()
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
    return Results.model_validate_json(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
