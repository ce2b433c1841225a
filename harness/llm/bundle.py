"""Reproducer bundles of the llm suite: for each failing run, the package and one command that installs the
runtime's MNN wheel in a venv and runs the same greedy generation (no harness needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.records import CellRecord, Results, ToolchainRecord, Verdict
from harness.reproducer import bundle_id

SCRIPT = """import json
import MNN
import MNN.llm as mllm

settings = json.load(open("request.json"))
engine = mllm.create("package/mnn-matrix-config.json")
engine = getattr(engine, "_c_obj", engine)
engine.load()
if hasattr(engine, "reset"):
    engine.reset()
release = tuple(int(p) if p.isdigit() else 99 for p in MNN.version().split(".")[:2])
# before 3.1, generate takes no token budget (the config's max_new_tokens holds)
print(engine.generate(settings["prompt"], settings["new_tokens"]) if release >= (3, 1) else
      engine.generate(settings["prompt"]))
"""
PYPI = """python3 -m venv .venv
.venv/bin/pip install -q "MNN=={version}"
.venv/bin/python reproduce.py"""
IMAGE = """# {runtime} is built from source: its image comes from `nox -s build -- {runtime}`
docker run --rm --network none -v "$PWD:$PWD" -w "$PWD" {image} python reproduce.py"""
SHELL = """#!/bin/sh
# {converter}'s exporter made package/; {runtime} (MNN {version}) runs it: {verdict} ({reason})
set -e
cd "$(dirname "$0")"
{command}
"""


def write_llm_bundles(results: Results, packages: dict[tuple[str, str, str], Path], prompt: list[int],
                      new_tokens: int, out: Path) -> list[Path]:
    """A bundle directory for every failing run (not export failures, not runtimes without MNN.llm)."""
    toolchains = {t.id: t for t in results.toolchains}
    written = []
    for cell in results.cells:
        if cell.outcome.verdict in (Verdict.PASS, Verdict.API_UNSUPPORTED, Verdict.NOT_RUN) or (
                cell.outcome.stage == "export"):
            continue
        package = packages.get((cell.converter, cell.model, cell.variant))
        if package is None or cell.runtime not in toolchains:
            continue
        written.append(_bundle(cell, package, toolchains[cell.runtime], prompt, new_tokens, out / bundle_id(cell)))
    return written


def _bundle(cell: CellRecord, package: Path, runtime: ToolchainRecord, prompt: list[int], new_tokens: int,
            target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(package, target / "package", ignore=shutil.ignore_patterns("onnx", "*.onnx"))
    (target / "request.json").write_text(json.dumps({"prompt": prompt, "new_tokens": new_tokens}))
    (target / "reproduce.py").write_text(SCRIPT)
    shell = target / "reproduce.sh"
    command = IMAGE.format(runtime=runtime.id, image=runtime.provenance.get("image", "")) if (
        runtime.kind == "source") else PYPI.format(version=runtime.version)
    shell.write_text(SHELL.format(converter=cell.converter, runtime=cell.runtime, version=runtime.version,
                                  command=command,
                                  verdict=cell.outcome.verdict.value, reason=cell.outcome.reason[:200]
                                  .replace("\n", " ")))
    shell.chmod(0o755)
    (target / "cell.json").write_text(cell.model_dump_json(indent=2))
    return target
