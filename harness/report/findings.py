"""Findings: the failing cells of a run clustered by root cause, each with where it happens as version ranges,
what it hits, where the data shows it fixed, and what a user can do, all derived from the cells."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from harness.records import NEUTRAL_VERDICTS, CellRecord, Results, Verdict
from harness.report.versions import VersionOrder

EARLY_STAGES = ("convert", "quantize")  # a failure here is the converter's; every runtime shows it
ERROR_LINE = re.compile(r"error|fail|not found|can ?not|invalid|abort|signal|exception", re.IGNORECASE)


@lru_cache(maxsize=1 << 16)  # a run's reasons repeat: 650,000 node-suite cells have a few thousand
def normalised(reason: str) -> str:
    """A failure message without what varies between cells of one cause: numbers, tensor names, output names,
    and anything after its first clause."""
    first = reason.split("; ")[0]
    first = re.sub(r"^[\w./-]+: (?=(max|shape|cosine|relative|NaN|dtype|\d))", "", first)  # an output's name
    first = re.sub(r"\[[^\]]*\]", "[…]", first)
    return re.sub(r"[\w./-]*\d[\w./-]*", "N", first)


def cause_of(cell: CellRecord) -> tuple:
    """What makes two failures one finding: stage, verdict, the log pattern (or the normalised message), the ops
    the log names, and, for numeric failures, the variant (whose tolerance decides them)."""
    outcome = cell.outcome
    return (outcome.stage, outcome.verdict.value, outcome.pattern or normalised(outcome.reason),
            tuple(sorted(outcome.ops)), cell.variant if outcome.stage == "compare" else "")


def counted(cell: CellRecord) -> bool:
    return cell.outcome.verdict not in NEUTRAL_VERDICTS


def is_failure(cell: CellRecord) -> bool:
    return counted(cell) and cell.outcome.verdict != Verdict.PASS


@dataclass
class Finding:
    """One root cause; every figure is a count of the cells it holds."""

    cause: tuple
    cells: list[CellRecord]
    where: list[str] = field(default_factory=list)  # exact converter × runtime products, as version ranges
    convert_with: str = ""  # converters whose models run on the affected runtimes without it ('' if none)
    run_on: str = ""  # runtimes that run the affected converters' models without it ('' if none)
    fixed_converter: str = ""  # the first converter after the affected ones that avoids it, if the data shows one
    fixed_runtime: str = ""
    still_latest: bool = False  # the newest converter or runtime still shows it
    new: bool = False  # not in the baseline run
    number: int = 0
    suite: str = "zoo"
    unbundled: frozenset[str] = frozenset()  # models a full run writes no bundles for (the real family's)

    @property
    def anchor(self) -> str:
        return f"f{self.number}"

    @property
    def verdict(self) -> Verdict:
        return self.cells[0].outcome.verdict

    @property
    def stage(self) -> str:
        return self.cells[0].outcome.stage

    @property
    def pairs(self) -> set[tuple[str, str]]:
        return {(c.converter, c.runtime) for c in self.cells}

    @property
    def models(self) -> Counter:
        return Counter(c.model for c in self.cells)

    @cached_property  # the renderers ask for it several times per finding
    def example(self) -> CellRecord:
        """A representative cell: the most common message; a model with a bundle, module API and normal memory
        first."""
        common = Counter(c.outcome.reason for c in self.cells).most_common(1)[0][0]
        return min((c for c in self.cells if c.outcome.reason == common),
                   key=lambda c: (c.model in self.unbundled, c.api != "module", c.memory != "normal"))

    @property
    def title(self) -> str:
        ops = f" ({', '.join(self.cause[3])})" if self.cause[3] else ""
        return f"{self.verdict.value} at {self.stage}{ops}: {self.example.outcome.reason}"

    @property
    def log_line(self) -> str:
        lines = [line.strip() for line in self.example.outcome.log_excerpt.splitlines() if line.strip()]
        return next((line for line in lines if ERROR_LINE.search(line)), lines[-1] if lines else "")

    @property
    def bundle(self) -> str:
        """Where `harness matrix` writes the example cell's reproducer (the zoo always; the node suite with
        --reproducers)."""
        from harness.reproducer import bundle_id

        cell = self.example
        if cell.model in self.unbundled:
            return (f"python -m harness matrix --model {cell.model} --variant {cell.variant} --converter "
                    f"{cell.converter} --runtime {cell.runtime} --reproducers")
        return f".mnn-matrix/reproducers/{self.suite}/{bundle_id(cell)}/reproduce.sh"

    def facet(self, name: str) -> list[str]:
        return sorted({getattr(c, name) for c in self.cells})

    @property
    def breadth(self) -> int:
        """Pairings hit; for a failure of the converter (its conversion or quantization), converters hit."""
        return len(self.facet("converter")) if self.stage in EARLY_STAGES else len(self.pairs)

    @property
    def conversions(self) -> int:
        return len({(c.converter, c.model, c.variant) for c in self.cells})


STAGES = ("convert", "quantize", "load", "run", "compare")


class CauseIndex:
    """For each (converter, runtime, model, variant): the causes of its failing cells and its earliest failing
    stage; absent when no cell of it counts."""

    def __init__(self, results: Results) -> None:
        self.causes: dict[tuple, set[tuple]] = {}
        self.earliest: dict[tuple, int] = {}
        for cell in results.cells:
            if counted(cell):
                key = (cell.converter, cell.runtime, cell.model, cell.variant)
                self.causes.setdefault(key, set())
                if cell.outcome.verdict != Verdict.PASS:
                    self.causes[key].add(cause_of(cell))
                    stage = _stage_index(cell.outcome.stage)
                    self.earliest[key] = min(self.earliest.get(key, stage), stage)

    def avoids(self, cause: tuple, converters, runtimes, combos) -> bool:
        """True when no listed pairing shows this cause for any (model, variant) combo and at least one combo ran
        there past the cause's stage (a combo that failed earlier, or did not run, is no evidence either way)."""
        stage, evidence = _stage_index(cause[0]), False
        for key in ((k, r, m, v) for k in converters for r in runtimes for m, v in combos):
            if key not in self.causes or self.earliest.get(key, len(STAGES)) < stage:
                continue
            if cause in self.causes[key]:
                return False
            evidence = True
        return evidence


def _stage_index(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES) - 1


def find(results: Results, baseline: Results | None = None, order: VersionOrder | None = None) -> list[Finding]:
    """The run's findings, most models and pairings hit first, numbered from 1."""
    order = order or VersionOrder(results)
    grouped: dict[tuple, list[CellRecord]] = defaultdict(list)
    for cell in results.cells:
        if is_failure(cell):
            grouped[cause_of(cell)].append(cell)
    index = CauseIndex(results)
    old = {cause_of(c) for c in baseline.cells if is_failure(c)} if baseline is not None else None
    from harness.reproducer import bundled  # (it renders with this package's templates)

    named = bool(results.run.selection.get("models"))
    unbundled = frozenset(m.name for m in results.models if not bundled(m.tags, named))
    findings = [_derive(Finding(cause, cells, suite=results.suite, unbundled=unbundled), order, index, old)
                for cause, cells in grouped.items()]
    findings.sort(key=lambda f: (-len(f.models), -f.breadth, -len(f.cells), f.title))
    for number, finding in enumerate(findings, 1):
        finding.number = number
    return findings


def _derive(finding: Finding, order: VersionOrder, index: CauseIndex, old: set | None) -> Finding:
    converters = {c.converter for c in finding.cells}
    runtimes = {c.runtime for c in finding.cells}
    combos = {(c.model, c.variant) for c in finding.cells}
    finding.where = order.where(finding.pairs)
    safe_converters = [k for k in order.converters
                       if k not in converters and index.avoids(finding.cause, [k], runtimes, combos)]
    safe_runtimes = [r for r in order.runtimes
                     if r not in runtimes and index.avoids(finding.cause, converters, [r], combos)]
    finding.convert_with = order.describe(safe_converters, order.converters) if safe_converters else ""
    finding.run_on = order.describe(safe_runtimes, order.runtimes) if safe_runtimes else ""
    finding.fixed_converter = _next_after(converters, order.converters, safe_converters)
    finding.fixed_runtime = _next_after(runtimes, order.runtimes, safe_runtimes)
    finding.still_latest = bool(order.converters and order.converters[-1] in converters) and (
        finding.stage in EARLY_STAGES or bool(order.runtimes and order.runtimes[-1] in runtimes))
    finding.new = old is not None and finding.cause not in old
    return finding


def _next_after(affected: set[str], ordered: list[str], safe: list[str]) -> str:
    """The first toolchain newer than every affected one, if it (and every newer one) avoids the finding."""
    last = max(ordered.index(t) for t in affected)
    newer = ordered[last + 1:]
    return newer[0] if newer and all(t in safe for t in newer) else ""
