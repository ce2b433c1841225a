"""Run-to-run diff: two results documents compared cell by cell, each change with its likely cause."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.records import CellRecord, Results, Verdict

Identity = tuple[str, str, str, str, str, str]  # converter, runtime, model, variant, api, memory


@dataclass(frozen=True)
class Change:
    """One cell whose verdict (or numbers) moved between the baseline and the current run."""

    kind: str  # newly-failing, newly-passing, verdict-changed, drift
    identity: Identity
    before: str
    after: str
    causes: tuple[str, ...]  # what else changed for this cell: toolchain builds, model, tolerance
    detail: str = ""

    @property
    def cell(self) -> str:
        converter, runtime, model, variant, api, memory = self.identity
        return f"{model} / {variant} / {api}{'' if memory == 'normal' else f' ({memory} memory)'}: " \
               f"{converter} → {runtime}"


@dataclass
class Diff:
    baseline: str
    current: str
    changes: list[Change] = field(default_factory=list)
    added: int = 0  # cells only in the current run
    removed: int = 0  # cells only in the baseline
    toolchains_added: list[str] = field(default_factory=list)
    toolchains_removed: list[str] = field(default_factory=list)
    toolchains_rebuilt: list[str] = field(default_factory=list)  # same id, different build (sha, version, ...)

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def regressions(self) -> list[Change]:
        return self.of_kind("newly-failing")


def changes(baseline: Results, current: Results, drift: float = 1e-3, baseline_name: str = "baseline",
            current_name: str = "current") -> Diff:
    """Every cell that changed verdict, or whose worst max|Δ|/max|ref| moved by more than `drift`."""
    before, after = _cells(baseline), _cells(current)
    provenance = {"before": {t.id: t.provenance for t in baseline.toolchains},
                  "after": {t.id: t.provenance for t in current.toolchains}}
    models = {"before": {m.name: m.sha256 for m in baseline.models},
              "after": {m.name: m.sha256 for m in current.models}}
    tolerances = {"before": _tolerances(baseline), "after": _tolerances(current)}
    result = Diff(baseline_name, current_name, added=len(after.keys() - before.keys()),
                  removed=len(before.keys() - after.keys()))
    result.toolchains_added = sorted(provenance["after"].keys() - provenance["before"].keys())
    result.toolchains_removed = sorted(provenance["before"].keys() - provenance["after"].keys())
    result.toolchains_rebuilt = sorted(t for t in provenance["after"].keys() & provenance["before"].keys()
                                       if provenance["after"][t] != provenance["before"][t])
    for identity in sorted(before.keys() & after.keys()):
        old, new = before[identity], after[identity]
        converter, runtime, model, variant = identity[:4]
        causes = tuple(
            [f"{t} was rebuilt" for t in dict.fromkeys((converter, runtime)) if t in result.toolchains_rebuilt]
            + (["the model changed"] if models["before"].get(model) != models["after"].get(model) else [])
            + (["the tolerance changed"] if tolerances["before"].get((model, variant)) !=
               tolerances["after"].get((model, variant)) else []))
        was, now = old.outcome.verdict, new.outcome.verdict
        if was != now:
            kind = ("newly-failing" if was == Verdict.PASS else "newly-passing" if now == Verdict.PASS
                    else "verdict-changed")
            result.changes.append(Change(kind, identity, was.value, now.value, causes, new.outcome.reason))
        elif now == Verdict.PASS:
            moved = _worst_ratio(new) - _worst_ratio(old)
            if abs(moved) > drift:
                result.changes.append(Change("drift", identity, f"{_worst_ratio(old):.3g}",
                                             f"{_worst_ratio(new):.3g}", causes, "max |Δ| / max |ref|"))
    return result


def _cells(results: Results) -> dict[Identity, CellRecord]:
    return {(c.converter, c.runtime, c.model, c.variant, c.api, c.memory): c for c in results.cells}


def _tolerances(results: Results) -> dict[tuple[str, str], object]:
    variants = {v.id: v.tolerance for v in results.variants}
    return {(m.name, v): m.tolerance or variants[v] for m in results.models for v in variants}


def _worst_ratio(cell: CellRecord) -> float:
    return max((d.mnn_rule_ratio or 0.0 for d in cell.outputs), default=0.0)
