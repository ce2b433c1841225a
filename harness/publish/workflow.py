"""The nightly workflow's two steps after the matrix: compare the run with the published one, then publish it
(or the fact that it failed). Each checks out the published branch afresh from `remote`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.publish import branch
from harness.publish.compare import SuiteComparison, compare_suites
from harness.publish.site import Run, lay_out


def compare_to_published(results_dir: Path, remote: str, branch_name: str = "results", drift: float = 1e-3,
                         link: str = "") -> list[SuiteComparison]:
    """Each suite of the run in `results_dir` against its tables on the published branch (diff.md beside it)."""
    with tempfile.TemporaryDirectory(prefix="mnn-matrix-published-") as work:
        published = Path(work) / "published"
        existed = branch.checkout(remote, branch_name, published)
        return compare_suites(results_dir, published if existed else None, drift, link)


def publish(results_dir: Path | None, remote: str, run: Run, branch_name: str = "results") -> tuple[str, list[str]]:
    """Add a commit for `run` to the published branch and push it; returns its SHA and the suites published.
    A failed run (run.ok False) keeps every table and says on the page that the latest run failed."""
    with tempfile.TemporaryDirectory(prefix="mnn-matrix-publish-") as work:
        site = Path(work) / "site"
        branch.checkout(remote, branch_name, site)
        suites = lay_out(site, run, results_dir)
        message = (f"Results of run {run.id}: {', '.join(suites)}" if run.ok
                   else f"Run {run.id} failed: tables unchanged")
        return branch.commit_and_push(site, branch_name, message), suites
