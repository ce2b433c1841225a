"""Numerical deltas between MNN's outputs and the reference, as records (the judging is harness.judge's)."""

from __future__ import annotations

import numpy as np

from harness import judge
from harness.config import Tolerance
from harness.records import OutputDelta

disagreement = judge.disagreement


def compare_output(name: str, actual: np.ndarray, reference: np.ndarray, tolerance: Tolerance) -> OutputDelta:
    """All deltas for one output, with the checks it fails (empty when it passes): see judge.output_delta."""
    return OutputDelta(**judge.output_delta(name, actual, reference, tolerance.model_dump()))
