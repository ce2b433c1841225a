"""Turning what a worker reported into a verdict, with the patterns in `patterns.yaml`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from harness.records import Outcome, OutputDelta, Verdict
from harness.workers import tail

PATTERNS_FILE = Path(__file__).with_name("patterns.yaml")
EXCERPT_LINES = 6
STAGE_VERDICTS = {"convert": Verdict.CONVERT_ERROR, "quantize": Verdict.QUANTIZE_ERROR}


@dataclass(frozen=True)
class Pattern:
    id: str
    stages: frozenset[str]
    verdict: Verdict
    regex: re.Pattern
    reason: str


@cache
def patterns() -> tuple[Pattern, ...]:
    entries = yaml.safe_load(PATTERNS_FILE.read_text())
    return tuple(Pattern(e["id"], frozenset(e["stages"]), Verdict(e["verdict"]), re.compile(e["regex"]),
                         e["reason"]) for e in entries)


def classify(stage: str, log: str, error: str = "") -> Outcome:
    """The verdict for a failure at `stage`.

    The convert and quantize stages always give their own verdict (the pattern adds the reason and
    ops); elsewhere a failure no pattern explains is `unclassified-error`.
    """
    text = f"{log}\n{error}".strip()
    found = match(text, stage)
    if found is None:
        fallback = {"quantize": (Verdict.QUANTIZE_ERROR, "the quantization tool wrote no model")}.get(stage)
        verdict, reason = fallback or (Verdict.UNCLASSIFIED, (error.strip().splitlines() or ["no error message"])[-1])
        return Outcome(verdict=verdict, stage=stage, reason=reason[:300], log_excerpt=tail(text, EXCERPT_LINES))
    pattern, groups, excerpt = found
    verdict = STAGE_VERDICTS.get(stage, pattern.verdict)
    return Outcome(verdict=verdict, stage=stage, reason=_reason(pattern, groups), ops=_ops(groups),
                   pattern=pattern.id, log_excerpt=excerpt)


def match(text: str, stage: str | None = None) -> tuple[Pattern, dict, str] | None:
    """The first pattern (for `stage`, or any) found in `text`: with its groups and the lines around it."""
    for pattern in patterns():
        if stage is not None and stage not in pattern.stages:
            continue
        found = pattern.regex.search(text)
        if found:
            groups = {k: v.strip() for k, v in found.groupdict().items() if v}
            return pattern, groups, _excerpt(text, found.start(), found.end())
    return None


LOST_VERDICTS = {"crash": Verdict.CRASH, "timeout": Verdict.TIMEOUT, "out-of-memory": Verdict.OUT_OF_MEMORY}


def lost(kind: str, stage: str, detail: str, log_tail: str) -> Outcome:
    """A worker that crashed, timed out or went over its memory cap; the log's last lines, and any op they blame,
    are the evidence."""
    found = match(log_tail)
    what = {"crash": f"worker died: {detail}", "timeout": f"worker timed out: {detail}"}.get(kind, detail)
    return Outcome(verdict=LOST_VERDICTS[kind], stage=stage,
                   reason=f"{what}, after: {_reason(found[0], found[1])}" if found else what,
                   ops=_ops(found[1]) if found else [], pattern=found[0].id if found else None,
                   log_excerpt=tail(log_tail, EXCERPT_LINES))


def _ops(groups: dict) -> list[str]:
    names = groups.get("ops", "").split() + ([groups["op"]] if "op" in groups else [])
    return sorted({name.split("::")[-1] for name in names})


def _reason(pattern: Pattern, groups: dict) -> str:
    values = {"ops": ", ".join(_ops(groups)), **{k: v for k, v in groups.items() if k != "ops"}}
    try:
        return pattern.reason.format_map(_Blank(values))
    except (KeyError, IndexError, ValueError):
        return pattern.reason


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _excerpt(text: str, start: int, end: int) -> str:
    """The matching lines with up to two lines either side, at most EXCERPT_LINES lines."""
    first, last = text.count("\n", 0, start), text.count("\n", 0, end)
    return "\n".join(text.splitlines()[max(0, first - 2):last + 3][:EXCERPT_LINES])


def judge_outputs(deltas: list[OutputDelta], disagreement: str | None, log: str) -> Outcome:
    """The verdict of a run that produced outputs: nondeterministic, wrong-shape (an output's shape or kind of dtype
    differs from the reference), wrong-output or pass."""
    failed = [f"{d.name}: {check}" for d in deltas for check in d.failed_checks]
    if disagreement is None and not failed:
        return Outcome(verdict=Verdict.PASS, stage="compare")
    found = match(log)
    evidence = dict(ops=_ops(found[1]), pattern=found[0].id, log_excerpt=found[2]) if found else dict(
        log_excerpt=tail(log, EXCERPT_LINES))
    if disagreement is not None:
        return Outcome(verdict=Verdict.NONDETERMINISTIC, stage="run", reason=disagreement, **evidence)
    verdict = Verdict.WRONG_SHAPE if any(d.mismatch for d in deltas) else Verdict.WRONG_OUTPUT
    return Outcome(verdict=verdict, stage="compare", reason="; ".join(failed)[:500], **evidence)


def unstable_conversion(outcome: Outcome, difference: str) -> Outcome:
    """A run of a model its converter writes differently each time: whether it passes is luck, so a pass
    or a wrong output becomes `nondeterministic` (stage convert); a failure keeps its verdict, with a note."""
    unstable = f"the tool under test wrote a different model each time: {difference}"
    if outcome.verdict not in (Verdict.PASS, Verdict.WRONG_OUTPUT, Verdict.WRONG_SHAPE, Verdict.NONDETERMINISTIC):
        return outcome.model_copy(update={"note": "; ".join(filter(None, [outcome.note, unstable]))})
    return outcome.model_copy(update={"verdict": Verdict.NONDETERMINISTIC, "stage": "convert",
                                      "reason": f"{unstable}; the one that ran: {outcome.reason or 'pass'}"})
