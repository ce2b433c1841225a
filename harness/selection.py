"""Narrowing a run from the command line: which toolchains, models, variants, APIs and suites."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import ConfigError, Matrix


@dataclass(frozen=True)
class Selection:
    """What the command line asked for; empty means everything in the matrix file."""

    toolchains: tuple[str, ...] = ()
    converters: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # zoo names or tags, paths of the user's .onnx files, or node-suite ops/cases
    variants: tuple[str, ...] = ()
    apis: tuple[str, ...] = ()
    inputs: Path | None = None  # the user's inputs (.npz) for their model
    dims: Mapping[str, int] = field(default_factory=dict)
    shard: tuple[int, ...] = ()  # (index, count): run only that shard of the cells (harness merge joins them)

    @property
    def narrowed(self) -> bool:
        return any((self.toolchains, self.converters, self.runtimes, self.models, self.variants, self.apis))

    @property
    def user_models(self) -> list[Path]:
        return [Path(m) for m in self.models if is_model_path(m)]

    def summary(self, config: Path) -> dict:
        """The selection as results record it."""
        return {"config": str(config), "narrowed": self.narrowed,
                **{k: list(v) for k, v in vars(self).items() if isinstance(v, tuple) and v},
                **({"dims": dict(self.dims)} if self.dims else {}),
                **({"inputs": str(self.inputs)} if self.inputs else {})}


def is_model_path(value: str) -> bool:
    return value.endswith(".onnx") or os.sep in value or Path(value).is_file()


def narrow(matrix: Matrix, selection: Selection, suite_problems: list[str] = ()) -> Matrix:
    """Keep the toolchains, roles and APIs the selection names, after checking every name it uses (the suite's own
    problems with the selection, such as unknown model names, come in `suite_problems`)."""
    toolchain_ids = [t.id for t in matrix.toolchains]
    variant_ids = [v.id for v in matrix.variants]
    problems = []
    for option, values, known in (("--toolchain", selection.toolchains, toolchain_ids),
                                  ("--converter", selection.converters, toolchain_ids),
                                  ("--runtime", selection.runtimes, toolchain_ids),
                                  ("--variant", selection.variants, variant_ids)):
        problems += [f"{option} {v}: not in the matrix (known: {', '.join(known)})" for v in values if v not in known]
    problems += suite_problems
    if problems:
        raise ConfigError(problems)
    toolchains = [t for t in matrix.toolchains if not selection.toolchains or t.id in selection.toolchains]
    kept = {t.id for t in toolchains}
    converters = [t for t in matrix.converter_ids if t in kept and t in (selection.converters or kept)]
    runtimes = [t for t in matrix.runtime_ids if t in kept and t in (selection.runtimes or kept)]
    return matrix.model_copy(update={
        "toolchains": [t for t in toolchains if t.id in converters or t.id in runtimes],
        "converters": converters, "runtimes": runtimes,
        "run": matrix.run.model_copy(update={"apis": list(selection.apis) or matrix.run.apis})})
