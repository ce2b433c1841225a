"""Suites: what a run is over. `zoo` is the model zoo plus the user's own models; `onnx-node` is ONNX's backend
node conformance suite. A `Suite` says where its models come from and how its results are kept and aggregated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import models as zoo
from harness import nodesuite
from harness.config import Matrix
from harness.modelstore import PreparedModel, prepare_user_model, prepare_zoo_model
from harness.nodesuite import NodeCase
from harness.progress import Progress
from harness.realmodels import FailedExport, prepare_real_models
from harness.selection import Selection, is_model_path
from harness.workspace import Workspace
from models import real

# Every model and tag `--model` and matrix.yaml may name: the zoo, and the real family (listed apart in models/real.py,
# which needs no torch to import).
CATALOG = {**zoo.ZOO, **real.REAL}
CATALOG_TAGS = zoo.TAGS | real.TAGS


@dataclass
class SuiteModels:
    """The models of a run, the variants each is converted with, and cases left out (with why)."""

    models: dict[str, PreparedModel] = field(default_factory=dict)
    variants: dict[str, list[str]] = field(default_factory=dict)
    excluded: list[NodeCase | FailedExport] = field(default_factory=list)


def zoo_suite(matrix: Matrix, selection: Selection, workspace: Workspace, progress: Progress) -> SuiteModels:
    """Build (or reuse) every selected zoo model and check the user's models, before any MNN work."""
    wanted = zoo_variants(matrix, selection)
    user_variants = list(selection.variants) or [v.id for v in matrix.variants]
    suite = SuiteModels()
    with progress.task("models", total=len(wanted) + len(selection.user_models)) as advance:
        for path in selection.user_models:
            model = prepare_user_model(path, workspace.models, selection.inputs, selection.dims)
            suite.models[model.name], suite.variants[model.name] = model, user_variants
            advance()
        for name, variants in wanted.items():
            if name in real.REAL:
                continue
            suite.models[name], suite.variants[name] = prepare_zoo_model(zoo.ZOO[name], workspace.models), variants
            advance()
        # --- the real family (models/real.py): exported together in the exporter venv, cached ---
        real_wanted = {name: variants for name, variants in wanted.items() if name in real.REAL}
        if real_wanted:
            prepared = prepare_real_models([real.REAL[name] for name in real_wanted], workspace, progress.say)
            for name, model in prepared.models.items():
                suite.models[name], suite.variants[name] = model, real_wanted[name]
            suite.excluded += [FailedExport(name, real.REAL[name].arch, why) for name, why in prepared.failed.items()]
            advance(count=len(real_wanted))
        # --- end of the real family ---
    return suite


def zoo_variants(matrix: Matrix, selection: Selection) -> dict[str, list[str]]:
    """The zoo models to run and each one's variants (file order, merged over selections naming it)."""
    picks = {m for m in selection.models if not is_model_path(m)}
    if selection.models and not picks:
        return {}  # only the user's own models
    variants: dict[str, list[str]] = {}
    for chosen in matrix.models:
        names = [chosen.name] if chosen.name else sorted(n for n, s in CATALOG.items() if chosen.tag in s.tags)
        for name in names:
            if picks and name not in picks and not picks & set(CATALOG[name].tags):
                continue
            merged = variants.setdefault(name, [])
            merged += [v for v in chosen.variants
                       if v not in merged and (not selection.variants or v in selection.variants)]
    return {name: found for name, found in variants.items() if found}


def node_suite(matrix: Matrix, selection: Selection, workspace: Workspace, progress: Progress) -> SuiteModels:
    """ONNX's node test cases in both forms (all, or those whose name or op `--model` names; a case's name
    selects its const form too), each with the suite's variants."""
    cases = nodesuite.materialize(workspace.root / "onnx-node", progress)
    if selection.models:
        cases = [c for c in cases if {c.name, c.name.split("@")[0], c.op} & set(selection.models)]
    variants = [v for v in matrix.onnx_node.variants if not selection.variants or v in selection.variants]
    models = nodesuite.prepared(workspace.root / "onnx-node", cases)
    return SuiteModels(models, {name: variants for name in models}, [c for c in cases if c.rule])


def zoo_selection_problems(selection: Selection) -> list[str]:
    """`--model` names that are neither a zoo model, a tag, nor an ONNX file."""
    return [f"--model {name}: no zoo model or tag of that name, and not a path to an .onnx file"
            for name in selection.models if not is_model_path(name)
            and name not in CATALOG and name not in CATALOG_TAGS]


@dataclass(frozen=True)
class Suite:
    """A kind of run: its models, where its tables go, and what it adds to them."""

    name: str
    models: Callable[[Matrix, Selection, Workspace, Progress], SuiteModels]
    results_dir: str  # under the results directory ('' for its top)
    reproducers: bool  # reproducer bundles by default (the node suite has tens of thousands of failing cells)
    op_support: bool  # aggregate an op-support table and coverage scores (one op per model)
    selection_problems: Callable[[Selection], list[str]] = lambda _selection: []
    run: Callable[..., object] | None = None  # llm: a run of its own (harness.llm.run), not converter x runtime
    owns: Callable[[str], bool] = lambda _name: True  # whether a --model names one of its models

    def enabled(self, matrix: Matrix, selection: Selection) -> bool:
        """Part of a run that names no suite: the node suite when enabled and no --model is given; the others unless
        --model names none of their models (a suite with a run of its own has no shards)."""
        if self.op_support:
            return matrix.onnx_node.enabled and not selection.models
        if self.run is not None and selection.shard:
            return False
        return not selection.models or any(self.owns(n) for n in selection.models)


def _run_llm(*args, **kwargs):
    from harness.llm.run import run_llm_suite

    return run_llm_suite(*args, **kwargs)


def _llm_model(name: str) -> bool:
    from harness.llm.models import TINY

    return name in TINY


# The zoo owns every --model name but the llm suite's: what is neither a zoo model nor a file is its error to report.
ZOO = Suite("zoo", zoo_suite, "", reproducers=True, op_support=False, selection_problems=zoo_selection_problems,
            owns=lambda name: not _llm_model(name))
NODE = Suite(nodesuite.SUITE, node_suite, nodesuite.SUITE, reproducers=False, op_support=True)
# --- the llm suite (harness/llm): MNN's LLM exporter x MNN.llm ---
LLM = Suite("llm", lambda *_args: SuiteModels(), "llm", reproducers=True, op_support=False, run=_run_llm,
            owns=_llm_model)
# --- end of the llm suite ---
SUITES = {suite.name: suite for suite in (ZOO, NODE, LLM)}
