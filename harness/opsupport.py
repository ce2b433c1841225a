"""The op-support table and coverage scores of a node-suite run, aggregated from its cells.

A case *passes* on a pairing when every one of its counted cells there passes; neutral verdicts (an
API's documented limit, a run the harness cannot feed: `NEUTRAL_VERDICTS`) are never counted, and a
case all of whose cells are neutral is not run there. Op support is kept per form (as-is, const) and
per API as well as over both APIs; an op *fully passes* when all its cases run there pass. Versions
are ordered as the toolchains' versions sort.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

from harness.modelstore import PreparedModel
from harness.records import (
    NEUTRAL_VERDICTS,
    CellRecord,
    Coverage,
    ExcludedCase,
    OpSupport,
    PairSupport,
    ToolchainRecord,
    Verdict,
)

CONVERTER_FAILURES = {Verdict.CONVERT_ERROR, Verdict.CRASH, Verdict.TIMEOUT, Verdict.OUT_OF_MEMORY,
                      Verdict.UNCLASSIFIED}
RUNTIME_FAILURES = {Verdict.LOAD_ERROR, Verdict.UNSUPPORTED_OP, Verdict.SHAPE_ERROR, Verdict.CRASH,
                    Verdict.TIMEOUT, Verdict.OUT_OF_MEMORY, Verdict.UNCLASSIFIED}
FORMS = ("as-is", "const")
ALL_APIS = ""  # the key of a score over every API


def pair_name(converter: str, runtime: str) -> str:
    return f"{converter} -> {runtime}"


def version_key(version: str) -> tuple:
    """'3.0.1' < '3.10.0' < 'latest' (anything not numeric sorts after every release)."""
    numbers = re.findall(r"\d+", version)
    return (0, tuple(int(n) for n in numbers)) if re.fullmatch(r"[\d.]+", version) else (1, version)


def op_of(model: PreparedModel) -> str:
    return next(tag[3:] for tag in model.tags if tag.startswith("op:"))


def form_of(model: PreparedModel) -> str:
    return next((tag[5:] for tag in model.tags if tag.startswith("form:")), FORMS[0])


def case_passes(cells: Iterable[CellRecord]) -> bool | None:
    """Whether every counted cell passes; None when no cell counts (none, or all neutral)."""
    counted = [c for c in cells if c.outcome.verdict not in NEUTRAL_VERDICTS]
    return all(c.outcome.verdict == Verdict.PASS for c in counted) if counted else None


def _support(cases: list[str], cells_of: Mapping[str, list[CellRecord]]) -> PairSupport:
    verdicts = [case_passes(cells_of.get(case, [])) for case in cases]
    return PairSupport(passed=sum(v is True for v in verdicts), run=sum(v is not None for v in verdicts))


def op_support(cells: list[CellRecord], models: Mapping[str, PreparedModel], toolchains: list[ToolchainRecord],
               excluded: Iterable[ExcludedCase] = ()) -> list[OpSupport]:
    """One row per op and form: cases passed per pairing (over both APIs and per API), first versions,
    regressions, gaps on each side, and the cases onnxruntime does not reproduce."""
    ordered = sorted((t for t in toolchains if t.status == "ok"), key=lambda t: version_key(t.version))
    converters = [t.id for t in ordered if "convert" in t.roles]
    runtimes = [t.id for t in ordered if "run" in t.roles]
    apis = sorted({cell.api for cell in cells})
    grouped: dict[tuple[str, str, str], dict[str, list[CellRecord]]] = defaultdict(lambda: defaultdict(list))
    by_case: dict[str, list[CellRecord]] = defaultdict(list)
    for cell in cells:
        for api in (ALL_APIS, cell.api):
            grouped[api, cell.converter, cell.runtime][cell.model].append(cell)
        by_case[cell.model].append(cell)
    cases_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, model in models.items():
        cases_of[op_of(model), form_of(model)].append(name)
    excluded_count: dict[str, int] = defaultdict(int)
    for case in excluded:
        excluded_count[case.op] += 1

    rows = []
    for (op, form), cases in sorted(cases_of.items(), key=lambda item: (item[0][0], FORMS.index(item[0][1]))):
        per_api = {api: {pair_name(c, r): _support(cases, grouped[api, c, r]) for c in converters for r in runtimes}
                   for api in (ALL_APIS, *apis)}
        pairs = per_api.pop(ALL_APIS)
        full = {(c, r) for c in converters for r in runtimes
                if pairs[pair_name(c, r)].passed == pairs[pair_name(c, r)].run > 0}
        diagonal = [t for t in converters if t in runtimes]
        failed = [c for case in cases for c in by_case[case]
                  if c.outcome.verdict != Verdict.PASS and c.outcome.verdict not in NEUTRAL_VERDICTS]
        rows.append(OpSupport(
            op=op, form=form, cases=len(cases), excluded=excluded_count[op] if form == FORMS[0] else 0,
            pairs=pairs, apis=per_api,
            first_converter=next((c for c in converters if any((c, r) in full for r in runtimes)), None),
            first_runtime=next((r for r in runtimes if any((c, r) in full for c in converters)), None),
            regressions=[f"passes on {pair_name(old, old)}, fails on {pair_name(new, new)}"
                         for i, old in enumerate(diagonal) if (old, old) in full
                         for new in diagonal[i + 1:] if (new, new) not in full and pairs[pair_name(new, new)].run],
            converter_gaps=sorted({c.converter for c in failed
                                   if c.outcome.stage == "convert" and c.outcome.verdict in CONVERTER_FAILURES}),
            runtime_gaps=sorted({pair_name(c.converter, c.runtime) for c in failed
                                 if c.outcome.stage != "convert" and c.outcome.verdict in RUNTIME_FAILURES}),
            onnxruntime_flags={case: models[case].onnxruntime for case in sorted(cases)
                               if models[case].onnxruntime not in ("", "agrees")}))
    return rows


def coverage(rows: list[OpSupport], toolchains: list[ToolchainRecord]) -> list[Coverage]:
    """Per toolchain converting and running its own models, per form, for each API and over both: ops fully
    passing of ops loaded (with a case run), and cases passed of cases run."""
    scores = []
    for form in FORMS:
        mine_rows = [row for row in rows if row.form == form]
        apis = sorted({api for row in mine_rows for api in row.apis})
        for toolchain in toolchains:
            pair = pair_name(toolchain.id, toolchain.id)
            for api in (*apis, ALL_APIS):
                found = [(row.apis.get(api, {}) if api else row.pairs).get(pair) for row in mine_rows]
                mine = [p for p in found if p is not None and p.run]
                if mine:
                    scores.append(Coverage(toolchain=toolchain.id, api=api, form=form,
                                           ops_passed=sum(p.passed == p.run for p in mine), ops_loaded=len(mine),
                                           cases_passed=sum(p.passed for p in mine),
                                           cases_run=sum(p.run for p in mine)))
    return scores
