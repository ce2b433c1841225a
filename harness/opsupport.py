"""The op-support table and coverage scores of a node-suite run, aggregated from its cells.

A case *passes* on a pairing when every one of its cells there (each variant and API) passes; an
op *fully passes* when all its cases do. Versions are ordered as the toolchains' versions sort.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

from harness.modelstore import PreparedModel
from harness.records import CellRecord, Coverage, ExcludedCase, OpSupport, PairSupport, ToolchainRecord, Verdict

CONVERTER_FAILURES = {Verdict.CONVERT_ERROR, Verdict.CRASH, Verdict.TIMEOUT, Verdict.UNCLASSIFIED}
RUNTIME_FAILURES = {Verdict.LOAD_ERROR, Verdict.UNSUPPORTED_OP, Verdict.SHAPE_ERROR, Verdict.CRASH,
                    Verdict.TIMEOUT, Verdict.UNCLASSIFIED}


def pair_name(converter: str, runtime: str) -> str:
    return f"{converter} -> {runtime}"


def version_key(version: str) -> tuple:
    """'3.0.1' < '3.10.0' < 'latest' (anything not numeric sorts after every release)."""
    numbers = re.findall(r"\d+", version)
    return (0, tuple(int(n) for n in numbers)) if re.fullmatch(r"[\d.]+", version) else (1, version)


def op_of(model: PreparedModel) -> str:
    return next(tag[3:] for tag in model.tags if tag.startswith("op:"))


def op_support(cells: list[CellRecord], models: Mapping[str, PreparedModel], toolchains: list[ToolchainRecord],
               excluded: Iterable[ExcludedCase] = ()) -> list[OpSupport]:
    """One row per op: cases passed per pairing, first versions, regressions, and gaps on each side."""
    ordered = sorted((t for t in toolchains if t.status == "ok"), key=lambda t: version_key(t.version))
    converters = [t.id for t in ordered if "convert" in t.roles]
    runtimes = [t.id for t in ordered if "run" in t.roles]
    case_cells: dict[tuple[str, str, str], list[CellRecord]] = defaultdict(list)
    by_case: dict[str, list[CellRecord]] = defaultdict(list)
    for cell in cells:
        case_cells[cell.model, cell.converter, cell.runtime].append(cell)
        by_case[cell.model].append(cell)
    cases_of: dict[str, list[str]] = defaultdict(list)
    for name, model in models.items():
        cases_of[op_of(model)].append(name)
    excluded_count: dict[str, int] = defaultdict(int)
    for case in excluded:
        excluded_count[case.op] += 1

    def passes(case: str, converter: str, runtime: str) -> bool:
        found = case_cells.get((case, converter, runtime), [])
        return bool(found) and all(c.outcome.verdict == Verdict.PASS for c in found)

    rows = []
    for op in sorted(cases_of):
        cases = cases_of[op]
        pairs = {pair_name(c, r): PairSupport(passed=sum(passes(case, c, r) for case in cases), run=len(cases))
                 for c in converters for r in runtimes}
        full = {(c, r) for c in converters for r in runtimes if pairs[pair_name(c, r)].passed == len(cases)}
        diagonal = [t for t in converters if t in runtimes]
        failed = [c for case in cases for c in by_case[case] if c.outcome.verdict != Verdict.PASS]
        rows.append(OpSupport(
            op=op, cases=len(cases), excluded=excluded_count[op], pairs=pairs,
            first_converter=next((c for c in converters if any((c, r) in full for r in runtimes)), None),
            first_runtime=next((r for r in runtimes if any((c, r) in full for c in converters)), None),
            regressions=[f"passes on {pair_name(old, old)}, fails on {pair_name(new, new)}"
                         for i, old in enumerate(diagonal) if (old, old) in full
                         for new in diagonal[i + 1:] if (new, new) not in full],
            converter_gaps=sorted({c.converter for c in failed
                                   if c.outcome.stage == "convert" and c.outcome.verdict in CONVERTER_FAILURES}),
            runtime_gaps=sorted({pair_name(c.converter, c.runtime) for c in failed
                                 if c.outcome.stage != "convert" and c.outcome.verdict in RUNTIME_FAILURES})))
    return rows


def coverage(rows: list[OpSupport], toolchains: list[ToolchainRecord]) -> list[Coverage]:
    """Per toolchain, converting and running its own models: ops fully passing of ops loaded, and cases."""
    scores = []
    for toolchain in toolchains:
        pair = pair_name(toolchain.id, toolchain.id)
        mine = [row.pairs[pair] for row in rows if pair in row.pairs]
        if mine:
            scores.append(Coverage(toolchain=toolchain.id, ops_passed=sum(p.passed == p.run for p in mine),
                                   ops_loaded=len(mine), cases_passed=sum(p.passed for p in mine),
                                   cases_run=sum(p.run for p in mine)))
    return scores
