"""The llm suite on real MNN: MNN's own LLM exporter (from the MNN repository at a release tag) with a wheel's
converter, and MNN.llm of several wheels. Needs the exporter venv (made on first use) and an MNN git repository
($MNN_MATRIX_MNN_REPO, or the developer machines' mirror)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.client import Client
from harness.config import PypiSpec, Timeouts
from harness.exporter_env import exporter_env
from harness.llm.exporter import VARIANTS, ensure_extras, export, exporter_tree, repository
from harness.llm.models import NEW_TOKENS, PROMPT, TINY, build_models
from harness.llm.run import judge_package
from harness.pool import WorkerPool
from harness.records import ToolchainRecord, Verdict
from harness.toolchains import make_toolchain
from harness.workspace import Workspace

VERSIONS = ("3.2.0", "3.4.0", "3.6.1")  # 3.2.0's wheel has no MNN.llm

pytestmark = pytest.mark.skipif(repository() is None, reason="no MNN git repository to take the LLM exporter from: "
                                "set MNN_MATRIX_MNN_REPO to a clone or mirror of alibaba/MNN")


@pytest.fixture(scope="module")
def llm_toolchains(workspace: Workspace) -> dict[str, object]:
    made = {}
    for version in VERSIONS:
        made[f"pypi-{version}"] = make_toolchain(PypiSpec(id=f"pypi-{version}", kind="pypi", version=version),
                                                 workspace)
        made[f"pypi-{version}"].provision()
    return made


@pytest.fixture(scope="module")
def package(workspace: Workspace, llm_toolchains, tmp_path_factory):
    """tiny-qwen2 (untied embeddings) exported by 3.4.0's exporter with 3.4.0's converter, 8-bit weights (3.4.0 cannot
    load what 3.6.1 exports: the older package is the one two versions share)."""
    env = exporter_env(workspace)
    env.ensure()
    root = tmp_path_factory.mktemp("llm")
    model = build_models([TINY["tiny-qwen2"]], root / "models", env)["tiny-qwen2"]
    tree = exporter_tree("3.4.0", root / "exporters")
    made = export(tree, model, VARIANTS["q8"], "pypi-3.4.0", llm_toolchains["pypi-3.4.0"].python, "test", env,
                  ensure_extras(env), root / "packages")
    assert made.ok, made.reason + made.log_tail
    return made, model


def records(*ids: str, llm: bool = True) -> dict[str, ToolchainRecord]:
    return {i: ToolchainRecord(id=i, kind="pypi", version=i[5:], roles=["run"], status="ok",
                               capabilities=["run", "convert"] + (["llm"] if llm and i != "pypi-3.2.0" else []))
            for i in ids}


def test_one_package_runs_on_two_versions_and_agrees(package, llm_toolchains):
    made, model = package
    assert {"llm.mnn", "llm.mnn.weight", "llm_config.json", "mnn-matrix-config.json"} <= {
        p.name for p in made.directory.iterdir()}
    runtimes = ["pypi-3.4.0", "pypi-3.6.1"]
    pool = WorkerPool({r: llm_toolchains[r] for r in runtimes}, 2048, 1)
    try:
        cells = judge_package(made, model, runtimes, records(*runtimes), pool, Timeouts(), lambda count=1: None)
    finally:
        pool.close()
    by_runtime = {c.runtime: c for c in cells}
    own = by_runtime["pypi-3.4.0"]
    assert own.outcome.verdict == Verdict.PASS, own.outcome
    assert own.outcome.note == "judged against transformers' fp32 output"
    assert next(d for d in own.outputs if d.name == "ids").shape == [NEW_TOKENS]
    assert next(d for d in own.outputs if d.name == "logits").cosine > 0.99
    newer = by_runtime["pypi-3.6.1"].outcome
    assert newer.verdict == Verdict.PASS, newer
    assert newer.note == "judged against pypi-3.4.0's own runtime", newer


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
