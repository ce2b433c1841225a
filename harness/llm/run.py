"""The `llm` suite's run: every exporter (a toolchain's exporter tree, driven with its own converter) x tiny model x
variant makes a package; every runtime with `MNN.llm` loads it in a fresh worker and generates greedily. A cell is
judged against the same package on the exporter's own runtime where that run agrees with transformers' fp32 output,
else against transformers."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import numpy as np

from harness import __version__, verdicts
from harness.client import Client, LlmResult
from harness.compare import compare_output
from harness.config import Tolerance
from harness.exporter_env import ExporterEnv, ExporterEnvError, exporter_env, legacy_exporter_env
from harness.judge import tail
from harness.llm.bundle import write_llm_bundles
from harness.llm.exporter import (
    INSTALLED_TOOLS,
    NOT_INSTALLED_TOOLS,
    VARIANTS,
    Exporter,
    Package,
    ensure_extras,
    export,
    exporter_tree,
    is_legacy,
    with_installed_tools,
)
from harness.llm.models import NEW_TOKENS, PROMPT, TINY, BuiltLlm, build_models
from harness.opsupport import version_key
from harness.plan import digest
from harness.pool import WorkerPool
from harness.progress import Progress
from harness.records import (
    CellRecord,
    ConversionRecord,
    ModelRecord,
    Outcome,
    OutputDelta,
    Results,
    RunInfo,
    ToolchainRecord,
    VariantRecord,
    Verdict,
)
from harness.selection import Selection
from harness.sources import SourceError
from harness.workspace import Workspace

Item, Result = TypeVar("Item"), TypeVar("Result")

SUITE = "llm"
NO_LLM = "no LLM runtime in this build: MNN.llm is missing"
# First-step logits: how close a runtime must come to its references. The tiny models' weights take values that
# every variant stores exactly (make_models.two_valued), so every package computes what transformers computes in fp32.
TOLERANCE = Tolerance(min_cosine=0.999)


def run_llm_suite(config: Path, selection: Selection, workspace: Workspace, jobs: int, fresh: bool,
                  progress: Progress, reproducers: Path | None = None, target: Path | None = None) -> Results | None:
    """Export, run and judge every cell of the llm suite; None if the documents a run of the same plan wrote to
    `target` are all still there. Exports are cached (`fresh`: made again); runs are made whenever the plan
    changed. With `reproducers`, a bundle for every failing run is written there."""
    from harness.matrix import documents_current, host_info, load, plan_id
    from harness.provisioning import ready_toolchains

    started, clock = datetime.now(timezone.utc), time.monotonic()
    matrix = load(config, replace(selection, models=(), variants=()))  # the llm suite's own names
    toolchains, records = ready_toolchains(matrix, workspace, progress)
    ok = {r.id: r for r in records if r.status == "ok"}
    exporters = [t for t in matrix.converter_ids if t in ok]
    runtimes = [t for t in matrix.runtime_ids if t in ok]
    names = [m for m in selection.models if m in TINY] or list(TINY)
    variants = [v for v in selection.variants if v in VARIANTS] or list(VARIANTS)
    env = exporter_env(workspace)
    env.ensure()
    root = workspace.root / SUITE
    with progress.task("models", total=None):
        models = build_models([TINY[n] for n in names], root / "models", env)
    envs = {False: env, True: legacy_exporter_env(workspace)}
    made = {e: _exporter(toolchains[e], ok[e], root / "exporters", envs) for e in exporters}
    content = digest([[e, ok[e].provenance, [x.identity, x.env.directory.name] if isinstance(x, Exporter) else x]
                      for e, x in made.items()],
                     [[r, ok[r].provenance] for r in runtimes], [m.digest for m in models.values()], variants,
                     matrix.run.model_dump())
    plan = plan_id(content, reproducers)
    if target is not None and documents_current(workspace, target, plan, fresh):
        return None
    wanted = [(e, m, v) for e in exporters for m in models.values() for v in variants]

    newest_pypi = max((r for r in ok.values() if r.kind == "pypi"), key=lambda r: version_key(r.version), default=None)

    def package(item: tuple[str, BuiltLlm, str]) -> Package:
        exporter, model, variant = item
        chosen = made[exporter]
        if not isinstance(chosen, Exporter):
            return Package(exporter, model.spec.name, variant, root, ok=False, reason=chosen, applies=False)
        if variant == INSTALLED_TOOLS:
            if not chosen.first_generation or newest_pypi is None:
                return Package(exporter, model.spec.name, variant, root, ok=False, reason=NOT_INSTALLED_TOOLS,
                               applies=False)
            chosen = with_installed_tools(chosen, newest_pypi.id,
                                          tuple(toolchains[newest_pypi.id].python_command(chosen.tree)))
        return export(chosen, model, VARIANTS[variant], root / "packages", fresh)

    with progress.task("convert", total=len(wanted)) as advance:
        packages = _in_order(lambda item: _counted(package(item), advance), wanted, min(jobs, os.cpu_count() or 1))
    pool = WorkerPool({t: toolchains[t] for t in runtimes}, matrix.run.memory_limit_mb, 1)
    try:
        with progress.task("run", total=len(packages) * len(runtimes)) as advance:
            judged = _in_order(lambda p: judge_package(p, models[p.model], runtimes, ok, pool, matrix.run.timeouts,
                                                       advance), packages, jobs)
    finally:
        pool.close()
    results = Results(
        suite=SUITE,
        run=RunInfo(started=started.isoformat(timespec="seconds"),
                    finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    duration_s=round(time.monotonic() - clock, 3), phases=dict(progress.durations), jobs=jobs,
                    resumed_cells=0, plan=plan, selection=selection.summary(config),
                    harness={"version": __version__, "prompt": list(PROMPT), "new_tokens": NEW_TOKENS,
                             "exporter_env": env.directory.name}),
        host=host_info(), settings=matrix.run.model_dump(), toolchains=records,
        models=[ModelRecord(name=name, sha256=m.digest, source="llm", tags=["llm", m.spec.arch], guards="",
                            inputs={"input_ids": {"values": list(PROMPT)}}, outputs=["ids", "logits"])
                for name, m in models.items()],
        variants=[VariantRecord(id=v, flags=list(VARIANTS[v].flags), tolerance=TOLERANCE.model_dump(
            exclude_defaults=True), description=VARIANTS[v].description) for v in variants],
        conversions=[_conversion(p) for p in packages], cells=[cell for cells in judged for cell in cells])
    if reproducers is not None:
        with progress.task("reproducers", total=None):
            write_llm_bundles(results, {(p.exporter, p.model, p.variant): p.directory for p in packages if p.ok},
                              list(PROMPT), NEW_TOKENS, reproducers)
    return results


def _in_order(task: Callable[[Item], Result], items: list[Item], jobs: int) -> list[Result]:
    """`task` over `items` on `jobs` threads, results in the items' order."""
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix=SUITE) as pool:
        return list(pool.map(task, items))


def _counted(result: Result, advance: Callable[[], None]) -> Result:
    advance()
    return result


def _exporter(toolchain, record: ToolchainRecord, root: Path, envs: dict[bool, ExporterEnv]) -> Exporter | str:
    """The toolchain's exporter, or why it has none (its tree or venv cannot be had)."""
    legacy = is_legacy(record.version)
    try:
        tree = exporter_tree(record, root)
        envs[legacy].ensure()
        extras = ensure_extras(envs[legacy], legacy)
    except (SourceError, ExporterEnvError) as error:
        return f"no exporter: {error}"
    identity = record.provenance.get("image_id") or f"{record.version}:{record.provenance.get('location', '')}"
    return Exporter(record.id, tree, tuple(toolchain.python_command(tree)), identity, envs[legacy], extras, legacy)


def _exported(package: Package) -> Outcome:
    """The export's outcome: a pass, a convert error, or not-run for a switch the exporter lacks."""
    if package.ok:
        return Outcome(verdict=Verdict.PASS, stage="export", note=package.note)
    return Outcome(verdict=Verdict.CONVERT_ERROR if package.applies else Verdict.NOT_RUN, stage="export",
                   reason=package.reason, log_excerpt=package.log_tail, note=package.note)


def _conversion(package: Package) -> ConversionRecord:
    return ConversionRecord(converter=package.exporter, model=package.model, variant=package.variant,
                            flags=list(VARIANTS[package.variant].flags), outcome=_exported(package),
                            convert_s=package.export_s)


def judge_package(package: Package, model: BuiltLlm, runtimes: list[str], ok: dict[str, ToolchainRecord],
                  pool: WorkerPool, timeouts, advance) -> list[CellRecord]:
    """Run one package on every runtime and judge each run against transformers and, where the exporter's own
    runtime passed, against that run."""
    base = dict(converter=package.exporter, model=package.model, variant=package.variant, api=SUITE)
    if not package.ok:
        advance(count=len(runtimes))
        return [CellRecord(**base, runtime=r, outcome=_exported(package)) for r in runtimes]
    results: dict[str, LlmResult | None] = {}
    scrub = functools.partial(_scrub, package.directory)
    for runtime in sorted(runtimes, key=lambda r: r != package.exporter):  # the exporter's own runtime first
        if "llm" not in ok[runtime].capabilities:
            results[runtime] = None
        else:
            results[runtime] = Client.pooled(pool, runtime, timeouts, scrub).llm(package.config, PROMPT, NEW_TOKENS)
        advance()
    # The exporter's own runtime is the reference only where it agrees with transformers: a package its own
    # runtime gets wrong would make every runtime that reproduces the same wrong ids look right.
    own = _cell(base, package.exporter, results[package.exporter], None, model, package) if (
        package.exporter in results) else None
    baseline = results[package.exporter].reply if own is not None and own.outcome.verdict == Verdict.PASS else None
    return [own if runtime == package.exporter else _cell(base, runtime, results[runtime], baseline, model, package)
            for runtime in runtimes]


def _cell(base: dict, runtime: str, result: LlmResult | None, baseline, model: BuiltLlm, package: Package
          ) -> CellRecord:
    if result is None:
        return CellRecord(**base, runtime=runtime, outcome=Outcome(verdict=Verdict.API_UNSUPPORTED, stage="load",
                                                                   reason=NO_LLM))
    if result.failure is not None:
        return CellRecord(**base, runtime=runtime, outcome=result.failure,
                          wall_s=result.reply.wall_s if result.reply else 0.0)
    reply = result.reply
    reference = model.reference
    # Weights stored exactly: every id must match transformers' greedy ids under the runtime's own sampler.
    penalized = reply.repetition_penalty != 1.0
    vs_float = _deltas(reply.ids, reply.logits, reference["penalized_ids" if penalized else "ids"],
                       np.array(reference["logits"], np.float32), TOLERANCE)
    judged = [("transformers' fp32 output" + (f" (greedy with {reply.repetition_penalty} repetition penalty, as this "
                                               "runtime's sampler)" if penalized else ""), vs_float)]
    outputs = vs_float
    if baseline is not None:  # the same package on its exporter's runtime: ids only where the samplers agree
        outputs = [d for d in _deltas(reply.ids, reply.logits, baseline.ids, baseline.logits, TOLERANCE)
                   if d.name != "ids" or baseline.repetition_penalty == reply.repetition_penalty]
        judged.insert(0, (f"{package.exporter}'s own runtime", outputs))
    failed = [f"differs from {against}: " + "; ".join(f"{d.name}: {', '.join(d.failed_checks)}"
                                                      for d in deltas if d.failed_checks)
              for against, deltas in judged if any(d.failed_checks for d in deltas)]
    log = _scrub(package.directory, reply.log)
    outcome = _charged(" and ".join(failed), log) if failed else Outcome(
        verdict=Verdict.PASS, stage="compare", note="judged against " + " and ".join(a for a, _ in judged))
    return CellRecord(**base, runtime=runtime, outcome=outcome, outputs=outputs, outputs_vs_float=vs_float,
                      load_s=reply.load_s, run_s=[reply.generate_s or 0.0], wall_s=reply.wall_s)


def _scrub(directory: Path, text: str) -> str:
    """The package's own path, out of MNN's messages."""
    return text.replace(str(directory), "package")


def _charged(difference: str, log: str) -> Outcome:
    """Wrong ids or logits, charged to their cause: what MNN's log says went wrong while loading or running the
    package (an input the graph lacks, a missing embedding file, an op it cannot execute), else wrong-output."""
    for stage in ("load", "run"):
        found = verdicts.classify(stage, log)
        if found.pattern is not None:
            return found.model_copy(update={"reason": f"{found.reason}; so the output {difference}"[:500]})
    return Outcome(verdict=Verdict.WRONG_OUTPUT, stage="compare", reason=difference[:500],
                   log_excerpt=tail(log, 12))


def _deltas(ids: list[int], logits, reference_ids: list[int], reference_logits, tolerance: Tolerance
            ) -> list[OutputDelta]:
    """The generated ids (equal over the shorter run, and not empty) and the first step's logits (cosine, top-1)."""
    same = min(len(ids), len(reference_ids))
    first_diff = next((i for i in range(same) if ids[i] != reference_ids[i]), None)
    checks = ([f"no token generated (reference {len(reference_ids)})"] if not ids else []) + (
        [f"ids differ from step {first_diff}: {ids[:NEW_TOKENS]} vs {reference_ids[:NEW_TOKENS]}"]
        if first_diff is not None else [])
    deltas = [OutputDelta(name="ids", shape=[len(ids)], reference_shape=[len(reference_ids)], dtype="int32",
                          reference_dtype="int32", elements=same, out_of_tolerance=0 if first_diff is None else
                          same - first_diff, failed_checks=checks)]
    if logits is not None and reference_logits is not None:
        delta = compare_output("logits", np.asarray(logits).reshape(-1), np.asarray(reference_logits).reshape(-1),
                               tolerance)
        if delta.failed_checks == [] and np.argmax(logits) != np.argmax(reference_logits):
            delta = delta.model_copy(update={"failed_checks": ["top-1 differs"]})
        deltas.append(delta)
    return deltas
