"""Turning what a worker reported into a verdict record, with the patterns in `patterns.yaml` (the rules are
harness.judge's, which reproducer bundles ship, so a bundle and the table always agree)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from harness import judge
from harness.records import Outcome, OutputDelta

PATTERNS_FILE = Path(__file__).with_name("patterns.yaml")


@cache
def patterns() -> tuple[dict, ...]:
    return tuple(yaml.safe_load(PATTERNS_FILE.read_text()))


def classify(stage: str, log: str, error: str = "") -> Outcome:
    """The verdict for a failure at `stage` (see judge.classify)."""
    return Outcome(**judge.classify(stage, log, error, patterns()))


def lost(kind: str, stage: str, detail: str, log_tail: str) -> Outcome:
    """A worker that crashed, timed out or went over its memory cap (see judge.lost)."""
    return Outcome(**judge.lost(kind, stage, detail, log_tail, patterns()))


def judge_outputs(deltas: list[OutputDelta], disagreement: str | None, log: str) -> Outcome:
    """The verdict of a run that produced outputs (see judge.judge_outputs)."""
    return Outcome(**judge.judge_outputs([d.model_dump() for d in deltas], disagreement, log, patterns()))


def unstable_conversion(outcome: Outcome, difference: str) -> Outcome:
    """A run of a model the tool under test writes differently each time (see judge.unstable)."""
    return Outcome(**judge.unstable(outcome.model_dump(mode="json"), difference))
