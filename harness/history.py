"""Results history: each full run's results document kept in `<dir>/history/`, with a trend of pass counts
per converter -> runtime pairing (trend.json, rendered as trend.md). The nightly workflow keeps it on the
published `results` branch (harness.publish), a commit per run; a local run keeps it beside its results."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from harness.records import Results, Verdict
from harness.report import document


def keep(results: Results, out: Path, written: Path | None = None) -> Path:
    """Keep this run's results and update the trend; returns the history file written. `written` is the results
    document already written for it, if any (a large one takes seconds to make)."""
    history = out / "history"
    history.mkdir(parents=True, exist_ok=True)
    name, data = (written.name, written.read_bytes()) if written is not None else document(results)
    extension, copy = name.removeprefix("results."), 1
    target = history / f"{stamp(results)}-{results.suite}.{extension}"
    while target.exists() and target.read_bytes() != data:  # another run that finished in the same second
        copy += 1
        target = history / f"{stamp(results)}-{results.suite}-{copy}.{extension}"
    target.write_bytes(data)
    index_path = history / "trend.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else []
    passed, total = Counter(), Counter()
    for cell in results.cells:
        pair = f"{cell.converter} -> {cell.runtime}"
        total[pair] += 1
        passed[pair] += cell.outcome.verdict == Verdict.PASS
    entry = {"file": target.name, "suite": results.suite, "finished": results.run.finished,
             "harness": results.run.harness.get("digest", "")[:12],
             "toolchains": {t.id: t.provenance.get("sha") or t.version for t in results.toolchains if t.status == "ok"},
             "pairs": {pair: [passed[pair], total[pair]] for pair in sorted(total)}}
    index = sorted([e for e in index if e["file"] != target.name] + [entry], key=lambda e: e["finished"])
    index_path.write_text(json.dumps(index, indent=1))
    (history / "trend.md").write_text(render_trend(index))
    return target


def stamp(results: Results) -> str:
    """The run's finishing time as it names its history files: 20261122T074611Z."""
    return results.run.finished.replace("-", "").replace(":", "").replace("+0000", "Z")


def diff_name(results: Results) -> str:
    """Where, under the history directory, the diff of this run against the previous published one is kept."""
    return f"{stamp(results)}-{results.suite}.diff.md"


def render_trend(index: list[dict]) -> str:
    from harness.report.markdown import environment

    suites = sorted({e["suite"] for e in index})
    pairs = {suite: sorted({p for e in index if e["suite"] == suite for p in e["pairs"]}) for suite in suites}
    return environment().get_template("trend.md.j2").render(index=index, suites=suites, pairs=pairs)
