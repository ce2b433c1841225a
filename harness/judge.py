"""The judge: a cell's outcome from what MNN gave. Output deltas against the reference under a tolerance
policy, agreement of repeated runs, log patterns for failures, and whether two conversions are the same model.

numpy and the standard library only: reproducer bundles ship this file beside worker.py, so a bundle prints
exactly the verdict its cell has in the table. Outcomes and deltas are plain dicts here; the harness wraps them
in its records (harness.compare, harness.verdicts).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

import numpy as np

REL_FLOOR = 1e-3  # relative error ignores elements smaller than this fraction of max |ref|
MNN_RULE = 0.01  # MNN's own test rule: max abs diff <= 1% of max |ref|
EXCERPT_LINES = 6
TAIL_LINES = 30
STAGE_VERDICTS = {"convert": "convert-error", "quantize": "quantize-error"}  # whatever the pattern says
LOST_VERDICTS = {"crash": "crash", "timeout": "timeout", "out-of-memory": "out-of-memory"}
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VERSION_STAMP = re.compile(rb"[\x05-\x08]\x00\x00\x00\d{1,2}\.\d{1,2}\.\d{1,2}\x00")  # a flatbuffer string "3.6.1"


# ---------------------------------------------------------------- outputs


def output_delta(name: str, actual: np.ndarray, reference: np.ndarray, tolerance: dict) -> dict:
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
        return dict(base, max_abs=None, max_rel=None, rel_l2=None, cosine=None, mnn_rule_ratio=None,
                    mnn_rule_pass=False, out_of_tolerance=int(reference.size), nan=0, inf=0, reference_nan=0,
                    reference_inf=0, failed_checks=[mismatch])
    exact = reference.dtype.kind in "biu"
    a = actual.astype(np.float64).reshape(-1)
    r = reference.astype(np.float64).reshape(-1)
    both = np.isfinite(a) & np.isfinite(r)
    # non-finite values must match the reference exactly (NaN where NaN, same-signed Inf)
    special = int(np.count_nonzero(~both & ~((np.isnan(a) & np.isnan(r)) | (a == r))))
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
    elif tolerance.get("atol") is not None:
        outside = int(np.count_nonzero(diff > tolerance["atol"] + tolerance.get("rtol", 0.0) * ref_abs))
    else:
        outside = 0
    outside += special
    checks = [mismatch] * bool(mismatch) + _failed_checks(tolerance, exact, ratio, cosine, rel_l2, outside, special,
                                                           int(reference.size))
    return dict(base, max_abs=_finite(max_abs), max_rel=_finite(max_rel), rel_l2=_finite(rel_l2),
                cosine=_finite(cosine), mnn_rule_ratio=_finite(ratio),
                mnn_rule_pass=not mismatch and special == 0 and ratio is not None and ratio <= MNN_RULE,
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


def _failed_checks(tolerance: dict, exact: bool, ratio: float | None, cosine: float | None, rel_l2: float | None,
                   outside: int, special: int, size: int) -> list[str]:
    failed = [f"{special} NaN/Inf where the reference differs"] if special else []
    if exact:
        return failed + ([f"{outside} of {size} integer elements differ"] if outside else [])
    limit = tolerance.get("max_abs_ratio")
    if limit is not None and (ratio is None or ratio > limit):
        failed.append(f"max abs diff / max |ref| = {_fmt(ratio)} > {limit:g}")
    if tolerance.get("atol") is not None and outside - special > 0:
        failed.append(f"{outside - special} of {size} elements outside atol {tolerance['atol']:g} + "
                      f"rtol {tolerance.get('rtol', 0.0):g}")
    if tolerance.get("min_cosine") is not None and (cosine is None or cosine < tolerance["min_cosine"]):
        failed.append(f"cosine {_fmt(cosine)} < {tolerance['min_cosine']:g}")
    if tolerance.get("max_rel_l2") is not None and (rel_l2 is None or rel_l2 > tolerance["max_rel_l2"]):
        failed.append(f"relative L2 error {_fmt(rel_l2)} > {tolerance['max_rel_l2']:g}")
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


def content_digest(model: bytes) -> str:
    """The hash of a converted model's bytes, ignoring the random uuid and the converter's version string MNN stamps
    on each: runtimes only report them (Interpreter::getModelVersion, Module::getInfo), so two converters that write
    the same graph and weights make models that run the same."""
    return hashlib.sha256(VERSION_STAMP.sub(b"-", UUID.sub(b"-" * 36, model))).hexdigest()


def model_difference(first: bytes, second: bytes) -> str:
    """How two conversions of one model differ, ignoring the random uuid MNN stamps on each ('' if not)."""
    a, b = UUID.sub(b"-" * 36, first), UUID.sub(b"-" * 36, second)
    if a == b:
        return ""
    if len(a) != len(b):
        return f"{len(a)} and {len(b)} bytes long"
    changed = np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))
    return f"{changed.size} of {len(a)} bytes differ, from offset {changed[0]}"


# ---------------------------------------------------------------- verdicts


def outcome(verdict: str, stage: str, reason: str = "", ops: list | None = None, pattern: str | None = None,
            log_excerpt: str = "", note: str = "") -> dict:
    return dict(verdict=verdict, stage=stage, reason=reason, ops=ops or [], pattern=pattern, log_excerpt=log_excerpt,
                note=note)


def judge_outputs(deltas: list[dict], differs: str | None, log: str, patterns: Sequence[dict]) -> dict:
    """The verdict of a run that produced outputs: wrong-shape (an output's shape or kind of dtype differs from the
    reference), nondeterministic (repeats differ), wrong-output, or pass."""
    failed = [f"{d['name']}: {check}" for d in deltas for check in d["failed_checks"]]
    if differs is None and not failed:
        return outcome("pass", "compare")
    found = match(log, patterns)
    evidence = dict(ops=_ops(found[1]), pattern=found[0]["id"], log_excerpt=found[2]) if found else dict(
        log_excerpt=tail(log, EXCERPT_LINES))
    if any(d["mismatch"] for d in deltas):  # a wrong shape or dtype is a fact whatever the values: it goes first
        reason = "; ".join(failed) + (f"; and repeats differ: {differs}" if differs else "")
        return outcome("wrong-shape", "compare", reason[:500], **evidence)
    if differs is not None:
        return outcome("nondeterministic", "run", differs, **evidence)
    return outcome("wrong-output", "compare", "; ".join(failed)[:500], **evidence)


def classify(stage: str, log: str, error: str, patterns: Sequence[dict]) -> dict:
    """The verdict of a failure at `stage`. The convert and quantize stages always give their own verdict (the
    pattern adds the reason and ops); elsewhere a failure no pattern explains is `unclassified-error`."""
    text = f"{log}\n{error}".strip()
    found = match(text, patterns, stage)
    if found is None:
        fallback = {"quantize": ("quantize-error", "the quantization tool wrote no model")}.get(stage)
        verdict, reason = fallback or ("unclassified-error", (error.strip().splitlines() or ["no error message"])[-1])
        return outcome(verdict, stage, reason[:300], log_excerpt=tail(text, EXCERPT_LINES))
    pattern, groups, excerpt = found
    return outcome(STAGE_VERDICTS.get(stage, pattern["verdict"]), stage, _reason(pattern, groups), _ops(groups),
                   pattern["id"], excerpt)


def lost(kind: str, stage: str, detail: str, log_tail: str, patterns: Sequence[dict]) -> dict:
    """A worker that crashed, timed out or went over its memory cap; the log's last lines, and any op they blame,
    are the evidence. A crash right after MNN said it could not allocate is out-of-memory."""
    found = match(log_tail, patterns)
    what = {"crash": f"worker died: {detail}", "timeout": f"worker timed out: {detail}"}.get(kind, detail)
    verdict = LOST_VERDICTS[kind]
    if kind == "crash" and found and found[0]["verdict"] == "out-of-memory":
        verdict = "out-of-memory"
    return outcome(verdict, stage, f"{what}, after: {_reason(found[0], found[1])}" if found else what,
                   _ops(found[1]) if found else [], found[0]["id"] if found else None, tail(log_tail, EXCERPT_LINES))


def repeated(outcomes: Sequence[dict], differences: Sequence[str], what: str) -> tuple[dict, str]:
    """The outcome of a tool run on one input several times, each in other memory, and how its outputs differ
    ('' when they do not; `differences` compares the first output with each other one that was written). A tool
    whose survival or output varies is unstable, so its models' verdicts would be luck: a failure in some attempts
    only is `nondeterministic`."""
    passed = [judged["verdict"] == "pass" for judged in outcomes]
    if all(passed):
        difference = next((d for d in differences if d), "")
        return outcomes[0], difference and f"{len(outcomes)} {what} differ ({difference})"
    if not any(passed):
        return outcomes[0], ""
    failed = next(judged for judged in outcomes if judged["verdict"] != "pass")
    reason = (f"the tool failed in {passed.count(False)} of {len(passed)} identical attempts "
              f"({failed['verdict']}: {failed['reason']})")
    return outcome("nondeterministic", failed["stage"], reason[:500], failed["ops"], failed["pattern"],
                   failed["log_excerpt"]), ""


def unstable(judged: dict, difference: str) -> dict:
    """A run of a model the tool under test writes differently each time: whether it passes is luck, so a pass or
    a wrong output becomes `nondeterministic` (stage convert); a failure keeps its verdict, with a note."""
    said = f"the tool under test wrote a different model each time: {difference}"
    if judged["verdict"] not in ("pass", "wrong-output", "wrong-shape", "nondeterministic"):
        return dict(judged, note="; ".join(filter(None, [judged.get("note", ""), said])))
    return dict(judged, verdict="nondeterministic", stage="convert",
                reason=f"{said}; the one that ran: {judged.get('reason') or 'pass'}")


def match(text: str, patterns: Sequence[dict], stage: str | None = None) -> tuple[dict, dict, str] | None:
    """The first pattern (for `stage`, or any) found in `text`: with its groups and the lines around it."""
    for pattern in patterns:
        if stage is not None and stage not in pattern["stages"]:
            continue
        found = re.search(pattern["regex"], text)
        if found:
            groups = {k: v.strip() for k, v in found.groupdict().items() if v}
            return pattern, groups, _excerpt(text, found.start(), found.end())
    return None


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _ops(groups: dict) -> list[str]:
    names = groups.get("ops", "").split() + ([groups["op"]] if "op" in groups else [])
    return sorted({name.split("::")[-1] for name in names})


def _reason(pattern: dict, groups: dict) -> str:
    values = {"ops": ", ".join(_ops(groups)), **{k: v for k, v in groups.items() if k != "ops"}}
    try:
        return pattern["reason"].format_map(_Blank(values))
    except (KeyError, IndexError, ValueError):
        return pattern["reason"]


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _excerpt(text: str, start: int, end: int) -> str:
    """The matching lines with up to two lines either side, at most EXCERPT_LINES lines."""
    first, last = text.count("\n", 0, start), text.count("\n", 0, end)
    return "\n".join(text.splitlines()[max(0, first - 2):last + 3][:EXCERPT_LINES])


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
