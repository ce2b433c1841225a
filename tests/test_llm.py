"""The llm suite on real MNN: MNN's own LLM exporter (from the MNN repository at a release tag) with a toolchain's
converter (a wheel's venv, or a container), and MNN.llm of several wheels. Needs the exporter venv (made on first
use) and the MNN git repository (GitHub, or a mirror in $MNN_MATRIX_MNN_REPO)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import LLM_PATTERN_CASES

from harness.client import Client
from harness.config import PypiSpec, SourceSpec, Timeouts
from harness.exporter_env import exporter_env, legacy_exporter_env
from harness.llm.exporter import (
    VARIANTS,
    Exporter,
    ensure_extras,
    export,
    exporter_tree,
    is_legacy,
    with_installed_tools,
)
from harness.llm.models import NEW_TOKENS, PROMPT, TINY, build_models
from harness.llm.run import judge_package
from harness.pool import WorkerPool
from harness.records import CellRecord, ToolchainRecord, Verdict
from harness.sources import UPSTREAM, Source, SourceError
from harness.toolchains import ProvisionError, make_toolchain
from harness.workspace import Workspace

VERSIONS = ("3.2.0", "3.4.0", "3.6.1")  # 3.2.0's wheel has no MNN.llm
MNN_2_9_4 = "ae6253fb46e607b733ce5e8eb50b54f83459eaa6"  # untagged (matrix.yaml's src-2.9.4)


@pytest.fixture(scope="module")
def llm_toolchains(workspace: Workspace) -> dict[str, object]:
    try:
        Source.of(UPSTREAM, "3.4.0").resolve()
    except SourceError as error:
        pytest.skip(f"no MNN git repository to take the LLM exporter from ({error}): set MNN_MATRIX_MNN_REPO to a "
                    "clone or mirror of alibaba/MNN")
    made = {}
    for version in VERSIONS:
        made[f"pypi-{version}"] = make_toolchain(PypiSpec(id=f"pypi-{version}", kind="pypi", version=version),
                                                 workspace)
        made[f"pypi-{version}"].provision()
    return made


@pytest.fixture(scope="module")
def exporting(workspace: Workspace, llm_toolchains, tmp_path_factory):
    """export(toolchain, version, model, variant[, under]): a package by `version`'s exporter tree with
    `toolchain`'s converter (tree and package under `under`, which a container toolchain must see)."""
    env = exporter_env(workspace)
    env.ensure()
    root = tmp_path_factory.mktemp("llm")
    models = build_models(list(TINY.values()), root / "models", env)

    def make(toolchain, version: str, model: str, variant: str, under: Path = root, commit: str = "", tools=None):
        record = ToolchainRecord(id=toolchain.id, kind="source" if commit else "pypi", version=version,
                                 roles=["convert"], status="ok", provenance={"sha": commit} if commit else {})
        tree = exporter_tree(record, under / "exporters")
        legacy = is_legacy(version)
        used = legacy_exporter_env(workspace) if legacy else env
        used.ensure()
        exporter = Exporter(toolchain.id, tree, tuple(toolchain.python_command(tree)), "test", used,
                            ensure_extras(used, legacy), legacy)
        if tools is not None:  # the pypi-tools variant: another toolchain's _tools
            exporter = with_installed_tools(exporter, tools.id, tuple(tools.python_command(tree)))
        made = export(exporter, models[model], VARIANTS[variant], under / "packages")
        assert made.ok, made.reason + made.log_tail
        return made, models[model]

    return make


@pytest.fixture(scope="module")
def package(exporting, llm_toolchains):
    """tiny-qwen2 (untied embeddings) exported by 3.4.0's exporter with 3.4.0's converter, 8-bit weights (3.4.0 cannot
    load what 3.6.1 exports: the older package is the one two versions share)."""
    return exporting(llm_toolchains["pypi-3.4.0"], "3.4.0", "tiny-qwen2", "q8")


def records(*ids: str, llm: bool = True) -> dict[str, ToolchainRecord]:
    return {i: ToolchainRecord(id=i, kind="pypi", version=i.split("-", 1)[1], roles=["run"], status="ok",
                               capabilities=["run", "convert"] + (["llm"] if llm and i != "pypi-3.2.0" else []))
            for i in ids}


def test_one_package_runs_on_two_versions_and_agrees(package, llm_toolchains):
    made, model = package
    assert {"llm.mnn", "llm.mnn.weight", "llm_config.json", "mnn-matrix-config.json"} <= {
        p.name for p in made.directory.iterdir()}
    by_runtime = judged(made, model, ["pypi-3.4.0", "pypi-3.6.1"], llm_toolchains)
    own = by_runtime["pypi-3.4.0"]
    assert own.outcome.verdict == Verdict.PASS, own.outcome
    assert own.outcome.note == "judged against transformers' fp32 output"
    assert next(d for d in own.outputs if d.name == "ids").shape == [NEW_TOKENS]
    assert next(d for d in own.outputs if d.name == "logits").cosine > 0.9999  # weights on a grid 8 bits store
    newer = by_runtime["pypi-3.6.1"].outcome
    assert newer.verdict == Verdict.PASS, newer
    assert newer.note == "judged against pypi-3.4.0's own runtime and transformers' fp32 output", newer


def test_a_runtime_without_mnn_llm_is_a_row_saying_so(package, llm_toolchains, scratch: Path):
    made, model = package
    from harness.supervisor import Worker

    worker = Worker(llm_toolchains["pypi-3.2.0"], scratch, "no-llm")
    try:
        result = Client.single(worker).llm(made.config, PROMPT, NEW_TOKENS)
    finally:
        worker.close()
    assert result.failure is not None and result.failure.verdict == Verdict.API_UNSUPPORTED
    assert "no LLM runtime in this build" in result.failure.reason
    cells = judge_package(made, model, ["pypi-3.2.0"], records("pypi-3.2.0"), None, Timeouts(), lambda count=1: None)
    assert [c.outcome.verdict for c in cells] == [Verdict.API_UNSUPPORTED]


def test_a_crash_in_the_llm_runtime_is_isolated_and_recorded(package, llm_toolchains, tmp_path: Path):
    made, _model = package
    broken = tmp_path / "broken"
    shutil.copytree(made.directory, broken)
    weights = broken / "llm.mnn.weight"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # truncated external weights
    pool = WorkerPool({"pypi-3.4.0": llm_toolchains["pypi-3.4.0"]}, 2048, 1)
    try:
        client = Client.pooled(pool, "pypi-3.4.0", Timeouts(run_s=60))
        failed = client.llm(broken / "mnn-matrix-config.json", PROMPT, NEW_TOKENS)
        healthy = client.llm(made.config, PROMPT, NEW_TOKENS)  # the same pool still serves
    finally:
        pool.close()
    assert failed.failure is not None, "a truncated weight file should not generate"
    assert failed.failure.verdict == Verdict.CRASH, failed.failure  # 3.4.0 reads past the truncated weights
    assert "SIGSEGV" in failed.failure.reason
    assert healthy.failure is None and len(healthy.reply.ids) == NEW_TOKENS


def judged(made, model, runtimes: list[str], toolchains) -> dict[str, CellRecord]:
    """Each runtime's cell for the package."""
    pool = WorkerPool({r: toolchains[r] for r in runtimes}, 2048, 1)
    try:
        cells = judge_package(made, model, runtimes, records(*runtimes), pool, Timeouts(), lambda count=1: None)
    finally:
        pool.close()
    return {c.runtime: c for c in cells}


def outcomes(made, model, runtimes: list[str], toolchains) -> dict[str, object]:
    return {runtime: cell.outcome for runtime, cell in judged(made, model, runtimes, toolchains).items()}


def test_a_runtime_agreeing_with_a_wrong_exporter_run_is_not_a_pass(package, llm_toolchains, tmp_path: Path):
    """Where the exporter's own runtime disagrees with transformers, it is no reference: the others are judged
    against transformers too (here transformers' reference is replaced by another model's)."""
    made, model = package
    other = tmp_path / "model"
    shutil.copytree(model.directory, other)
    reference = json.loads((other / "reference.json").read_text())
    reference["ids"] = [(i + 1) % 300 for i in reference["ids"]]
    reference["logits"] = reference["logits"][1:] + reference["logits"][:1]
    (other / "reference.json").write_text(json.dumps(reference))
    found = outcomes(made, replace(model, directory=other), ["pypi-3.4.0", "pypi-3.6.1"], llm_toolchains)
    assert found["pypi-3.4.0"].verdict == Verdict.WRONG_OUTPUT, found["pypi-3.4.0"]
    newer = found["pypi-3.6.1"]
    assert newer.verdict == Verdict.WRONG_OUTPUT and "transformers" in newer.reason, newer


@pytest.mark.parametrize(("model", "pattern"), LLM_PATTERN_CASES)
def test_a_newer_package_on_an_older_llm_runtime_is_charged_to_what_its_log_says(exporting, llm_toolchains,
                                                                                  model: str, pattern: str):
    """3.6.1's packages crash 3.4.0's MNN.llm; its log says why (these pin the two LLM patterns)."""
    made, built = exporting(llm_toolchains["pypi-3.6.1"], "3.6.1", model, "default")
    found = outcomes(made, built, ["pypi-3.6.1", "pypi-3.4.0"], llm_toolchains)
    assert found["pypi-3.6.1"].verdict == Verdict.PASS, found["pypi-3.6.1"]
    older = found["pypi-3.4.0"]
    assert (older.verdict, older.pattern) == (Verdict.CRASH, pattern), older
    assert older.log_excerpt, "the cell keeps the log lines that justify it"


def test_an_exporter_drives_a_container_toolchains_converter(exporting, llm_toolchains, container_toolchain):
    """A source toolchain's converter runs in its image (here the image of PyPI's 3.6.1 wheel); its package runs
    like the venv's."""
    toolchain, _client = container_toolchain
    made, built = exporting(toolchain, "3.6.1", "tiny-llama", "q8", toolchain.workspace.root / "llm")
    assert "docker" in (made.directory.parent / f"{made.directory.name}.mnnconvert").read_text()
    found = outcomes(replace(made, exporter="pypi-3.6.1"), built, ["pypi-3.6.1"], llm_toolchains)
    assert found["pypi-3.6.1"].verdict == Verdict.PASS, found["pypi-3.6.1"]


def test_a_2_9_package_is_refused_by_3x_runtimes_for_its_past_key_values_input(exporting, llm_toolchains):
    """Field report 3 on a real run: 2.9.x's exporter (llm_export.py, driven with its model type's modeling code)
    gives the model a past_key_values input; 3.x's MNN.llm does not feed one."""
    made, built = exporting(llm_toolchains["pypi-3.4.0"], "2.9.4", "tiny-qwen2", "default", commit=MNN_2_9_4)
    assert {"llm.mnn", "llm.mnn.weight", "embeddings_bf16.bin", "tokenizer.txt", "llm_config.json"} <= {
        p.name for p in made.directory.iterdir()}
    assert "2.9.x's exporter: model type Qwen2-7B-Instruct" in made.note
    found = outcomes(made, built, ["pypi-3.4.0", "pypi-3.6.1"], llm_toolchains)
    for runtime, outcome in found.items():
        assert outcome.pattern == "input-not-found" and "past_key_values" in outcome.reason, (runtime, outcome)


def test_a_runtime_before_3_1_is_judged_by_the_repetition_penalty_its_greedy_sampler_applies(
        exporting, llm_toolchains, workspace: Workspace, tmp_path: Path):
    """3.0.1's MNN.llm divides the logits of every id it has seen by 1.1 before its argmax: its ids are right when
    they are transformers' greedy ids under that penalty (this model's differ from plain greedy ids)."""
    spec = SourceSpec(id="src-3.0.1", kind="source", version="3.0.1", ref="3.0.1")
    toolchain = make_toolchain(spec, Workspace(tmp_path, shared_envs=workspace.envs))  # its image sees tmp_path
    try:
        toolchain.provision()
    except ProvisionError as error:
        pytest.skip(f"needs src-3.0.1's image ({error}); build it with `nox -s build -- src-3.0.1` (needs Docker)")
    made, built = exporting(toolchain, "3.0.1", "tiny-qwen2", "default", tmp_path / "llm")
    assert built.reference["penalized_ids"] != built.reference["ids"]
    found = outcomes(made, built, ["src-3.0.1"], {"src-3.0.1": toolchain})
    own = found["src-3.0.1"]
    assert own.verdict == Verdict.PASS, own
    assert "1.1 repetition penalty" in own.note, own


def test_a_2_9_package_converted_by_a_3x_pymnn_cannot_execute_silu_on_2_9_4(exporting, llm_toolchains,
                                                                            workspace: Workspace, tmp_path: Path):
    """Field report 1 on a real run: 2.9.x's exporter converts with whatever PyMNN's _tools is installed; a 3.x
    converter writes SiLU as a Unary op 2.9.4's runtime cannot execute."""
    spec = SourceSpec(id="src-2.9.4", kind="source", version="2.9.4", ref=MNN_2_9_4)
    toolchain = make_toolchain(spec, Workspace(tmp_path, shared_envs=workspace.envs))
    try:
        toolchain.provision()
    except ProvisionError as error:
        pytest.skip(f"needs src-2.9.4's image ({error}); build it with `nox -s build -- src-2.9.4` (needs Docker)")
    made, built = exporting(llm_toolchains["pypi-3.4.0"], "2.9.4", "tiny-llama", "pypi-tools", tmp_path / "llm",
                            commit=MNN_2_9_4, tools=llm_toolchains["pypi-3.6.1"])
    assert "converted with pypi-3.6.1's _tools" in made.note
    outcome = outcomes(made, built, ["src-2.9.4"], {"src-2.9.4": toolchain})["src-2.9.4"]
    assert outcome.verdict == Verdict.UNSUPPORTED_OP, outcome
    assert "Unary Op can not execute" in outcome.log_excerpt, outcome
