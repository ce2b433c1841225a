"""Toolchains in version order, and sets of them described as version ranges ("≥ 3.2.0", "≤ 3.0.0", "any")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from harness.opsupport import version_key
from harness.records import Results


class VersionOrder:
    """The run's working converters and runtimes, oldest first ('latest' last), and how to name them."""

    def __init__(self, results: Results) -> None:
        ok = sorted((t for t in results.toolchains if t.status == "ok"), key=lambda t: (version_key(t.version), t.id))
        self.converters = [t.id for t in ok if "convert" in t.roles]
        self.runtimes = [t.id for t in ok if "run" in t.roles]
        versions = [t.version for t in ok]
        # a version names its toolchain when the id only decorates it (pypi-3.0.0) and no other has it
        self.labels = {t.id: t.version if t.version in t.id and versions.count(t.version) == 1 else t.id for t in ok}

    def label(self, toolchain: str) -> str:
        return self.labels.get(toolchain, toolchain)

    def describe(self, chosen: Iterable[str], ordered: list[str]) -> str:
        """'any', '≤ X', '≥ X', 'X - Y' when `chosen` is a contiguous run of `ordered`, else the exact list."""
        picked = set(chosen)
        index = [i for i, t in enumerate(ordered) if t in picked]
        if not index:
            return "none"
        if len(index) == len(ordered) and len(ordered) > 1:
            return "any"
        names = [self.label(ordered[i]) for i in index]
        if len(index) == 1:
            return names[0]
        if index[-1] - index[0] + 1 != len(index):
            return ", ".join(names)
        if index[0] == 0:
            return f"≤ {names[-1]}"
        if index[-1] == len(ordered) - 1:
            return f"≥ {names[0]}"
        return f"{names[0]} – {names[-1]}"

    def where(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        """Converter x runtime pairs as exact products: 'converted by ≥ 3.2.0 · run on ≤ 3.0.0', one per group of
        converters that share the same runtimes."""
        runs_of: dict[str, set[str]] = defaultdict(set)
        for converter, runtime in pairs:
            runs_of[converter].add(runtime)
        groups: dict[frozenset[str], list[str]] = defaultdict(list)
        for converter in self.converters:
            if converter in runs_of:
                groups[frozenset(runs_of[converter])].append(converter)
        return [f"converted by {self.describe(converters, self.converters)} · "
                f"run on {self.describe(runs, self.runtimes)}" for runs, converters in groups.items()]

    def pair(self, converter: str, runtime: str) -> str:
        return f"{self.label(converter)} → {self.label(runtime)}"
