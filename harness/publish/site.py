"""One run laid out on the published branch's working copy: each suite's tables replaced (never by older ones),
its document and diff added to the history and the trend, and the status page (index.html, published.json)
saying which run each table comes from and whether the latest run failed."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from harness import history
from harness.publish import SUITE_DIRS, TABLES, PublishError, find_document
from harness.report import read_results

STATUS = "published.json"  # the branch's record: the latest run, each suite's published run, every run
RUNS_SHOWN = 30


@dataclass(frozen=True)
class Run:
    """A workflow run being published."""

    id: str
    url: str = ""
    ok: bool = True  # False: the run failed; nothing of it is published but the fact
    time: str = ""

    def entry(self) -> dict:
        return {**asdict(self), "time": self.time or datetime.now(timezone.utc).isoformat(timespec="seconds")}


def lay_out(site: Path, run: Run, results_dir: Path | None) -> list[str]:
    """Put the run on the branch working copy `site`; returns the suites whose tables it replaced."""
    status = json.loads((site / STATUS).read_text()) if (site / STATUS).exists() else {"suites": {}, "runs": []}
    entry = run.entry()
    published = []
    if run.ok:
        published = [suite for suite, directory in SUITE_DIRS.items()
                     if results_dir and find_document(results_dir / directory)]
        if not published:
            raise PublishError(f"{results_dir}: no results document to publish (a failed run is published as such)")
        for suite in published:
            status["suites"][suite] = _replace_tables(site, results_dir, suite, entry)
    entry["suites"] = published
    status["latest"] = entry
    status["runs"] = [*status["runs"], entry]
    (site / STATUS).write_text(json.dumps(status, indent=1))
    (site / "index.html").write_text(PAGE.render(status=status, runs=status["runs"][::-1][:RUNS_SHOWN]))
    (site / ".nojekyll").write_text("")  # GitHub Pages serves the files as they are: no Jekyll, no results.md page
    return published


def _replace_tables(site: Path, results_dir: Path, suite: str, entry: dict) -> dict:
    """Replace one suite's tables, refusing a run no newer than the published one; returns the suite's summary."""
    source, target = results_dir / SUITE_DIRS[suite], site / SUITE_DIRS[suite]
    document = find_document(source)
    results = read_results(document)
    old = find_document(target)
    if old is not None and (previous := read_results(old).run.finished) >= results.run.finished:
        raise PublishError(f"{suite}: the run in {source} finished {results.run.finished}, not after the published "
                           f"one ({previous}): stale results are never published as new")
    target.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        (target / name).unlink(missing_ok=True)
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    history.keep(results, site, document)
    if (source / "diff.md").is_file():
        shutil.copyfile(source / "diff.md", site / "history" / history.diff_name(results))
    cells = results.cells
    return {"run": entry["id"], "url": entry["url"], "finished": results.run.finished, "cells": len(cells),
            "passed": sum(c.outcome.verdict == "pass" for c in cells),
            "files": [(target / name).relative_to(site).as_posix() for name in TABLES if (target / name).is_file()],
            "diff": f"history/{history.diff_name(results)}" if (source / "diff.md").is_file() else "",
            "unavailable": {t.id: t.reason.splitlines()[0] if t.reason else "" for t in results.toolchains
                            if t.status != "ok"}}


PAGE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string("""\
<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mnn-matrix: published results</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
.failed { background: #fdecea; border-left: 4px solid #b60205; padding: .5rem 1rem; }
table { border-collapse: collapse; } td, th { padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
</style>
<h1>mnn-matrix: does a model converted by MNN X run correctly on MNN Y?</h1>
{% set latest = status.latest %}
{% if not latest.ok %}
<p class="failed" id="run-failed"><strong>The latest run, <a href="{{ latest.url }}">{{ latest.id }}</a>
({{ latest.time }}), failed</strong> and published no tables. The tables below are from the runs named with them.</p>
{% endif %}
{% for suite, s in status.suites | dictsort %}
<h2>{{ suite }}</h2>
<p>From run <a href="{{ s.url }}">{{ s.run }}</a>, finished {{ s.finished }}:
{{ s.passed }} of {{ s.cells }} cells pass.
{% for path in s.files %}<a href="{{ path }}">{{ path }}</a>{% if not loop.last %} · {% endif %}{% endfor %}
{% if s.diff %} · <a href="{{ s.diff }}">changes since the run before</a>{% endif %}</p>
{% if s.unavailable %}
<p>Toolchains unavailable in this run (their builds failed or could not run):</p>
<ul>{% for id, reason in s.unavailable | dictsort %}<li>{{ id }}: {{ reason }}</li>{% endfor %}</ul>
{% endif %}
{% else %}
<p>No run has published tables yet.</p>
{% endfor %}
<h2>History</h2>
<p><a href="history/trend.md">Pass counts per pairing over time</a>. Every run's results document and diff are
kept in <code>history/</code> on the <code>results</code> branch, a commit per run.</p>
<table>
<tr><th>run</th><th>time</th><th>outcome</th></tr>
{% for r in runs %}
<tr><td><a href="{{ r.url }}">{{ r.id }}</a></td><td>{{ r.time }}</td>
<td>{{ ("published: " ~ (r.suites | join(", "))) if r.ok else "failed: nothing published" }}</td></tr>
{% endfor %}
</table>
</html>
""")
