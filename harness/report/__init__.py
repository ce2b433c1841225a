"""Renderers: tables made from a results document alone, never from a live run."""

from __future__ import annotations

import gzip
from pathlib import Path

from harness.records import Results

COMPRESS_ABOVE = 5000  # cells; a node-suite run is tens of MB of JSON, a few MB gzipped


def write_results(results: Results, out: Path) -> list[Path]:
    """Write results.json (gzipped when large), results.md and results.html, each atomically; return their paths."""
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    out.mkdir(parents=True, exist_ok=True)
    large = len(results.cells) > COMPRESS_ABOVE
    document = results.model_dump_json(indent=None if large else 1).encode()
    files = {"results.json.gz": gzip.compress(document, mtime=0)} if large else {"results.json": document}
    files["results.md"] = render_markdown(results).encode()
    files["results.html"] = render_html(results).encode()
    stale = out / ("results.json" if large else "results.json.gz")
    stale.unlink(missing_ok=True)
    for name, data in files.items():
        partial = out / f".{name}.partial"
        partial.write_bytes(data)
        partial.replace(out / name)
    return [out / name for name in files]


def read_results(path: Path) -> Results:
    """Read results.json or results.json.gz; raises ValueError if it is not a results document."""
    data = path.read_bytes()
    return Results.model_validate_json(gzip.decompress(data) if path.suffix == ".gz" else data)
