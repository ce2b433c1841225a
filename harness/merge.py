"""Shards put together: `harness merge` joins the results documents of `--shard I/N` runs into the document the
unsharded run gives, cell for cell. Every results document lists its conversions and cells in one canonical order
(`in_order`), so the two are the same list, whatever ran where."""

from __future__ import annotations

from collections.abc import Sequence

from harness.opsupport import coverage, op_support
from harness.records import CellRecord, ConversionRecord, Results, RunInfo, Verdict
from harness.suites import SUITES

MEMORY_ORDER = ("normal", "high", "low")


class MergeError(Exception):
    """Documents that are not shards of one run; the message says how they differ."""


def in_order(results: Results) -> Results:
    """The document with its conversions and cells in canonical order: converter, model, variant (then runtime,
    API and memory mode for cells), each in the order the document lists them, then by name: a total order, so
    any arrangement of the same records gives the same list (a compact document reads back in it)."""
    toolchains = {t.id: i for i, t in enumerate(results.toolchains)}
    models = {m.name: i for i, m in enumerate(results.models)}
    variants = {v.id: i for i, v in enumerate(results.variants)}
    apis = {api: i for i, api in enumerate(results.settings.get("apis", []))}

    def conversion(c: ConversionRecord | CellRecord) -> tuple:
        return (toolchains[c.converter], models.get(c.model, len(models)), c.model, variants.get(c.variant, 0),
                c.variant)

    def cell(c: CellRecord) -> tuple:
        return (*conversion(c), toolchains[c.runtime], apis.get(c.api, len(apis)), c.api, MEMORY_ORDER.index(c.memory))

    return results.model_copy(update={"conversions": sorted(results.conversions, key=conversion),
                                      "cells": sorted(results.cells, key=cell)})


def merge(shards: Sequence[Results]) -> Results:
    """One document from the documents of a run's shards (each cell and conversion kept once)."""
    if not shards:
        raise MergeError("no documents to merge")
    first = shards[0]
    for other in shards[1:]:
        _check_same_run(first, other)
    _check_complete(shards)
    conversions = _conversions(shards)
    cells = {(c.converter, c.runtime, c.model, c.variant, c.api, c.memory): c for shard in shards for c in shard.cells}
    models = {m.name: m for m in first.models}
    aggregates = SUITES[first.suite].op_support
    ops = op_support(list(cells.values()), models, first.toolchains, first.excluded) if aggregates else []
    selection = {k: v for k, v in first.run.selection.items() if k != "shard"}
    run = RunInfo(started=min(s.run.started for s in shards), finished=max(s.run.finished for s in shards),
                  duration_s=max(s.run.duration_s for s in shards),
                  phases={name: max(s.run.phases.get(name, 0.0) for s in shards)
                          for name in dict.fromkeys(p for s in shards for p in s.run.phases)},
                  jobs=first.run.jobs, resumed_cells=sum(s.run.resumed_cells for s in shards), selection=selection,
                  harness=first.run.harness)
    merged = first.model_copy(update={"run": run, "conversions": list(conversions.values()),
                                      "cells": list(cells.values()), "op_support": ops,
                                      "coverage": coverage(ops, first.toolchains) if aggregates else []})
    return in_order(merged)


def _check_complete(shards: Sequence[Results]) -> None:
    """Every shard of the run, each once: else the merged document would claim cells it does not have."""
    found = [tuple(shard.run.selection.get("shard", ())) for shard in shards]
    counts = {shard[1] for shard in found if len(shard) == 2}
    if any(len(shard) != 2 for shard in found) or len(counts) != 1:
        raise MergeError(f"these are not the shards of one run (their --shard values: {found or 'none'})")
    [count] = counts
    if sorted(index for index, _ in found) != list(range(1, count + 1)):
        raise MergeError(f"shards {sorted(index for index, _ in found)} of {count}: each of 1..{count} is needed once")


def _conversions(shards: Sequence[Results]) -> dict[tuple, ConversionRecord]:
    """Each conversion once. Several shards may convert the same model; where their outcomes differ, the tool
    is unstable and the conversion says so (its cells keep what their own shard saw)."""
    merged: dict[tuple, ConversionRecord] = {}
    for shard in shards:
        for record in shard.conversions:
            identity = (record.converter, record.model, record.variant)
            seen = merged.setdefault(identity, record)
            if seen.outcome.verdict != record.outcome.verdict:
                merged[identity] = seen.model_copy(update={"outcome": seen.outcome.model_copy(update={
                    "verdict": Verdict.NONDETERMINISTIC,
                    "reason": f"shards of this run disagree: {seen.outcome.verdict.value} and "
                              f"{record.outcome.verdict.value}"})})
    return merged


def _check_same_run(first: Results, other: Results) -> None:
    what = {"suite": lambda r: r.suite, "harness code": lambda r: r.run.harness.get("digest"),
            "settings": lambda r: r.settings, "toolchains": lambda r: [(t.id, t.status, t.provenance.get("sha"),
                                                                         t.provenance.get("mnn_version"))
                                                                        for t in r.toolchains],
            "models": lambda r: [(m.name, m.sha256) for m in r.models], "variants": lambda r: r.variants}
    for name, read in what.items():
        if read(first) != read(other):
            raise MergeError(f"the documents are not shards of one run: their {name} differ")
