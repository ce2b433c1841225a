"""Numerical deltas between MNN's outputs and the reference, and the tolerance policy's checks."""

from __future__ import annotations

import math

import numpy as np

from harness.config import Tolerance
from harness.records import OutputDelta

REL_FLOOR = 1e-3  # relative error ignores elements smaller than this fraction of max |ref|
MNN_RULE = 0.01  # MNN's own test rule: max abs diff <= 1% of max |ref|


def compare_output(name: str, actual: np.ndarray, reference: np.ndarray, tolerance: Tolerance) -> OutputDelta:
    """All deltas for one output, with the checks it fails (empty when it passes).

    The shape must equal the reference's, and the kind of dtype must match (float, or integer/bool compared
    exactly; MNN holds int64 and bool as int32): a mismatch is never a pass. Values are still compared, in
    flat order, when the element counts agree, so the deltas show whether only the layout is wrong.
    """
    mismatch = layout_mismatch(actual, reference)
    base = dict(name=name, shape=list(actual.shape), reference_shape=list(reference.shape),
                dtype=str(actual.dtype), reference_dtype=str(reference.dtype), elements=int(reference.size),
                mismatch=mismatch)
    if actual.size != reference.size:
        return OutputDelta(**base, max_abs=None, max_rel=None, rel_l2=None, cosine=None, mnn_rule_ratio=None,
                           mnn_rule_pass=False, out_of_tolerance=int(reference.size), nan=0, inf=0,
                           reference_nan=0, reference_inf=0, failed_checks=[mismatch])
    exact = reference.dtype.kind in "biu"
    a = actual.astype(np.float64).reshape(-1)
    r = reference.astype(np.float64).reshape(-1)
    a_finite, r_finite = np.isfinite(a), np.isfinite(r)
    both = a_finite & r_finite
    # non-finite values must match the reference exactly (NaN where NaN, same-signed Inf)
    mismatched_special = int(np.count_nonzero(~both & ~((np.isnan(a) & np.isnan(r)) | (a == r))))
    diff = np.abs(a[both] - r[both])
    ref_abs = np.abs(r[both])
    max_abs = float(diff.max()) if diff.size else 0.0  # no finite pairs: nothing to differ
    max_ref = float(ref_abs.max()) if ref_abs.size else 0.0
    ratio = max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else None)
    keep = ref_abs >= REL_FLOOR * max_ref
    max_rel = float((diff[keep] / ref_abs[keep]).max()) if max_ref > 0 else ratio
    cosine = _cosine(a[both], r[both])
    ref_norm, diff_norm = float(np.linalg.norm(r[both])), float(np.linalg.norm(diff))
    rel_l2 = diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else None)
    if exact:
        outside = int(np.count_nonzero(a[both] != r[both]))
    elif tolerance.atol is not None:
        outside = int(np.count_nonzero(diff > tolerance.atol + tolerance.rtol * ref_abs))
    else:
        outside = 0
    outside += mismatched_special
    checks = [mismatch] * bool(mismatch) + _failed_checks(tolerance, exact, ratio, cosine, rel_l2, outside,
                                                           mismatched_special, int(reference.size))
    mnn_rule_pass = not mismatch and mismatched_special == 0 and ratio is not None and ratio <= MNN_RULE
    return OutputDelta(
        **base, max_abs=_finite(max_abs), max_rel=_finite(max_rel), rel_l2=_finite(rel_l2), cosine=_finite(cosine),
        mnn_rule_ratio=_finite(ratio), mnn_rule_pass=mnn_rule_pass,
        out_of_tolerance=outside, nan=int(np.isnan(a).sum()), inf=int(np.isinf(a).sum()),
        reference_nan=int(np.isnan(r).sum()), reference_inf=int(np.isinf(r).sum()), failed_checks=checks)


def layout_mismatch(actual: np.ndarray, reference: np.ndarray) -> str:
    """How `actual`'s shape or kind of dtype differs from `reference`'s, or ''."""
    problems = []
    if actual.shape != reference.shape:
        squeezed = [d for d in actual.shape if d != 1] == [d for d in reference.shape if d != 1]
        problems.append(f"shape {list(actual.shape)} != reference {list(reference.shape)}"
                        + (" (only size-1 dimensions differ)" if squeezed else ""))
    if (actual.dtype.kind == "f") != (reference.dtype.kind == "f"):
        problems.append(f"dtype {actual.dtype} where the reference is {reference.dtype}")
    return "; ".join(problems)


def _failed_checks(tolerance: Tolerance, exact: bool, ratio: float | None, cosine: float | None,
                   rel_l2: float | None, outside: int, special: int, size: int) -> list[str]:
    failed = []
    if special:
        failed.append(f"{special} NaN/Inf where the reference differs")
    if exact:
        if outside:
            failed.append(f"{outside} of {size} integer elements differ")
        return failed
    if tolerance.max_abs_ratio is not None and (ratio is None or ratio > tolerance.max_abs_ratio):
        failed.append(f"max abs diff / max |ref| = {_fmt(ratio)} > {tolerance.max_abs_ratio:g}")
    if tolerance.atol is not None and outside - special > 0:
        failed.append(f"{outside - special} of {size} elements outside atol {tolerance.atol:g} + "
                      f"rtol {tolerance.rtol:g}")
    if tolerance.min_cosine is not None and (cosine is None or cosine < tolerance.min_cosine):
        failed.append(f"cosine {_fmt(cosine)} < {tolerance.min_cosine:g}")
    if tolerance.max_rel_l2 is not None and (rel_l2 is None or rel_l2 > tolerance.max_rel_l2):
        failed.append(f"relative L2 error {_fmt(rel_l2)} > {tolerance.max_rel_l2:g}")
    return failed


def disagreement(repeats: list[dict[str, np.ndarray]]) -> str | None:
    """How the first repeated run that differs from run 1 differs (bitwise; NaN equals NaN), or None."""
    first = repeats[0]
    for index, other in enumerate(repeats[1:], start=2):
        for name, a in first.items():
            b = other[name]
            if a.shape != b.shape:
                return f"run {index} of {len(repeats)} gave {name} shape {list(b.shape)}, run 1 {list(a.shape)}"
            if np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                continue
            fa, fb = a.astype(np.float64), b.astype(np.float64)
            differ = ~((fa == fb) | (np.isnan(fa) & np.isnan(fb)))
            both = np.isfinite(fa) & np.isfinite(fb) & differ
            biggest = f", max diff {np.abs(fa[both] - fb[both]).max():.3g}" if both.any() else ""
            return (f"run {index} of {len(repeats)} differs from run 1 in {name}: "
                    f"{int(differ.sum())} of {a.size} elements{biggest}; NaN {int(np.isnan(fb).sum())} "
                    f"vs {int(np.isnan(fa).sum())} in run 1")
    return None


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size == 0:
        return 1.0  # nothing finite to compare
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
