"""A run compared with the last published run, suite by suite, each against its own baseline, and the body of
the regression issue: within GitHub's limit, linking to the full diffs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.diff import Change, Diff, changes
from harness.history import diff_name
from harness.publish import SUITE_DIRS, PublishError, find_document
from harness.records import NEUTRAL_VERDICTS, Verdict
from harness.report import read_results

ISSUE_LIMIT = 65_536  # characters GitHub takes in an issue body or comment
COMPARED, REGRESSION, NO_BASELINE = 0, 3, 4  # exit codes of `harness compare-to-published` (errors: 1 or 2)


@dataclass
class SuiteComparison:
    """One suite's run against its published baseline (`diff` is None when there is none yet)."""

    suite: str
    document: Path
    diff: Diff | None
    diff_link: str  # where the published branch keeps this diff

    @property
    def regressions(self) -> list[Change]:
        """Cells that passed and now fail; a cell that is now only not run, or beyond its API, is no regression."""
        return [c for c in (self.diff.regressions if self.diff else []) if Verdict(c.after) not in NEUTRAL_VERDICTS]


def compare_suites(results_dir: Path, published: Path | None, drift: float, link: str) -> list[SuiteComparison]:
    """Compare each suite in `results_dir` with its document on the published branch checked out in `published`
    (None: the branch does not exist yet); each diff is written beside its run as diff.md."""
    from harness.report.markdown import render_diff

    comparisons = []
    for suite, directory in SUITE_DIRS.items():
        document = find_document(results_dir / directory)
        if document is None:
            continue
        results = _read(document)
        if results.suite != suite:
            raise PublishError(f"{document}: a {results.suite} run where the {suite} suite's tables belong")
        baseline = find_document(published / directory) if published else None
        where = f"history/{diff_name(results)}"
        comparison = SuiteComparison(suite, document, None, f"{link.rstrip('/')}/{where}" if link else where)
        if baseline is not None:
            before = _read(baseline)
            comparison.diff = changes(before, results, drift, f"published run of {before.run.finished}",
                                      f"this run, {results.run.finished}")
            every = max(len(comparison.diff.changes), 1)  # the full diff: every change, however many
            (document.parent / "diff.md").write_text(render_diff(comparison.diff, drift, limit=every))
        comparisons.append(comparison)
    if not comparisons:
        raise PublishError(f"{results_dir}: no results document (results.json or results.json.gz) of any suite")
    return comparisons


def exit_code(comparisons: list[SuiteComparison]) -> int:
    """REGRESSION if any suite regressed, else NO_BASELINE if a suite has no published run yet, else COMPARED."""
    if any(c.regressions for c in comparisons):
        return REGRESSION
    return NO_BASELINE if any(c.diff is None for c in comparisons) else COMPARED


def issue_body(comparisons: list[SuiteComparison], run_url: str = "", limit: int = ISSUE_LIMIT) -> str:
    """The regression issue's Markdown: per suite, the count and a link to its full diff, then as many of the
    newly failing cells as fit in `limit` characters."""
    regressed = [c for c in comparisons if c.regressions]
    total = sum(len(c.regressions) for c in regressed)
    run = f" in [this run]({run_url})" if run_url else ""
    parts = [f"**{total} cells that passed in the last published run fail{run}.** "
             "Each suite's full diff (also newly passing cells, changed failures and numeric drift) is linked below.\n"]
    parts += [f"- {c.suite}: {len(c.regressions)} newly failing, [full diff]({c.diff_link})\n" for c in regressed]
    remaining, sections = limit - sum(map(len, parts)), {}
    for left, comparison in enumerate(sorted(regressed, key=lambda c: len(c.regressions))):  # small suites first
        sections[comparison.suite] = _section(comparison, remaining // (len(regressed) - left))
        remaining -= len(sections[comparison.suite])
    return "".join(parts) + "".join(sections[c.suite] for c in regressed)


def _section(comparison: SuiteComparison, budget: int) -> str:
    """A suite's newly failing cells as a table, cut to `budget` characters with a pointer to the full diff."""
    section = [f"\n### {comparison.suite}\n\n| cell | before | after | came with | detail |\n|---|---|---|---|---|\n"]
    used, regressions = len(section[0]), comparison.regressions  # (a list built on each access: once here)
    for shown, change in enumerate(regressions):
        row = (f"| {_cell(change.cell)} | {change.before} | {change.after} | "
               f"{_cell('; '.join(change.causes) or 'no other change')} | {_cell(change.detail[:160])} |\n")
        rest = f"\n… {len(regressions) - shown} more in the [full diff]({comparison.diff_link}).\n"
        if used + len(row) + len(rest) > budget:
            section.append(rest)
            break
        section.append(row)
        used += len(row)
    return "".join(section)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _read(document: Path):
    try:
        return read_results(document)
    except (OSError, ValueError) as error:
        raise PublishError(f"{document}: not a readable results document: {str(error).splitlines()[0]}") from None
