"""Publishing nightly runs: the `results` branch (tables, history, a status page served by GitHub Pages), the
comparison of a run with the last published one, and the regression issue's body. The workflow calls these
through `harness compare-to-published` and `harness publish`; tests drive them against a local bare repository."""

from __future__ import annotations

from pathlib import Path

# Where each suite's tables live, in results/ and on the branch (harness/suites.py: each suite's results_dir). A run
# without a suite's document (the llm job failed) compares and publishes the others; that suite's tables stay.
SUITE_DIRS = {"zoo": "", "onnx-node": "onnx-node", "llm": "llm"}
DOCUMENTS = ("results.json", "results.json.gz")
TABLES = (*DOCUMENTS, "results.md", "results.html", "diff.md")  # the files of one suite's run, replaced together


class PublishError(Exception):
    """The published branch cannot be read or written, or the results are not fit to publish."""


def find_document(directory: Path) -> Path | None:
    """The results document in `directory` (plain or gzipped, whichever the run's size made), if any."""
    return next((directory / name for name in DOCUMENTS if (directory / name).is_file()), None)
