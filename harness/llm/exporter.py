"""LLM packages: MNN's exporter (transformers/llm/export at a toolchain's commit or release tag) run in the exporter
venv on a tiny model, driven with that toolchain's own converter through a wrapper that calls its `_tools` extension
(never `MNN.tools.mnnconvert`, which pip-installs and uploads telemetry). A source toolchain's converter runs in its
image. Cached by exporter tree, model, variant and converter identity."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness.exporter_env import OFFLINE, ExporterEnv, ExporterEnvError
from harness.judge import tail
from harness.llm.models import NEW_TOKENS, BuiltLlm
from harness.opsupport import version_key
from harness.plan import code_digest, digest
from harness.records import ToolchainRecord
from harness.sources import UPSTREAM, Source, SourceError
from harness.toolchains import PIP_INSTALL, run_step

EXPORT_DIR = "transformers/llm/export"
FIRST_SCRIPT = "llm_export.py"  # 2.9.x's exporter; llmexport.py from 3.0 on
EXTRAS = ("yaspin==3.5.1", "termcolor==3.3.0")  # the exporter's spinner: all it needs beyond the exporter venv
EXPORT_TIMEOUT_S = 600
CONVERT = "import sys, _tools; _tools.mnnconvert(['mnnconvert', *sys.argv[1:]])"
RUN_CONFIG = "mnn-matrix-config.json"
# What every runtime is told: one thread, greedy, a fixed budget, high precision (harness-controlled).
RUN_SETTINGS = {"backend_type": "cpu", "thread_num": 1, "precision": "high", "memory": "high",
                "sampler_type": "greedy", "max_new_tokens": NEW_TOKENS, "reuse_kv": False}


@dataclass(frozen=True)
class LlmVariant:
    id: str
    flags: tuple[str, ...]
    description: str


VARIANTS = {v.id: v for v in (
    LlmVariant("default", (), "the exporter's defaults (4-bit weights)"),
    LlmVariant("q8", ("--quant_bit", "8"), "8-bit weights"),
    LlmVariant("q8-lm8", ("--quant_bit", "8", "--lm_quant_bit", "8"), "8-bit weights and lm_head"),
    LlmVariant("fp16", ("--quant_bit", "16"), "float16 weights"),
    LlmVariant("compat-c4", ("--disable_transformer_c4",), "newer exporters' switch for older engines"),
    LlmVariant("pypi-tools", (), "2.9.x's exporter converting with the newest PyPI wheel's _tools: the one it imports "
                                 "where a newer PyMNN is installed"),
)}
INSTALLED_TOOLS = "pypi-tools"
NOT_INSTALLED_TOOLS = ("not run: only 2.9.x's exporter converts with the installed PyMNN's _tools (later ones take "
                       "--mnnconvert)")


@dataclass(frozen=True)
class Package:
    """One export: the package directory if it was made, else why not."""

    exporter: str
    model: str
    variant: str
    directory: Path
    ok: bool
    reason: str = ""
    log_tail: str = ""
    export_s: float | None = None
    applies: bool = True  # False: the variant's switch is not in this exporter (its cells are not-run)
    note: str = ""  # how it was exported, where that differs from the exporter venv (LEGACY_NOTE)

    @property
    def config(self) -> Path:
        return self.directory / RUN_CONFIG


# Exporters before 3.3 were written for transformers 4.x and a torch.onnx.export that defaulted to TorchScript
# (torch 2.9 made dynamo the default, which drops their FakeLinear ops: packages without weights). They run in the
# legacy venv (requirements/exporters-legacy.txt) with sitecustomize_legacy.py restoring that default.
LEGACY_BEFORE = "3.3"
SITECUSTOMIZE = Path(__file__).with_name("sitecustomize_legacy.py")
# The code that decides what an export comes to (a failed export is kept until it changes): part of its key.
EXPORT_CODE = ("llm/exporter.py", "llm/sitecustomize_legacy.py", "llm/tools_shim.py")
LEGACY_NOTE = ("exported with transformers 4.48.3 (the tokenizer's class named as 4.x names it) and torch.onnx.export "
               "defaulting to TorchScript, as in its time")


def is_legacy(version: str) -> bool:
    """Whether an exporter of MNN `version` needs the legacy venv ("latest" and other names do not)."""
    return version_key(version) < version_key(LEGACY_BEFORE)


@dataclass(frozen=True)
class Exporter:
    """One toolchain's exporter: its tree, the venv it runs in (with its extras directory), and the argv of the
    toolchain's Python that its converter runs in."""

    toolchain: str
    tree: Path
    python: tuple[str, ...]
    identity: str  # what decides its converter's output: the toolchain's version and environment or image
    env: ExporterEnv
    extras: Path
    legacy: bool = False
    converter_note: str = ""  # whose converter, where it is not the toolchain's own

    @functools.cached_property
    def script(self) -> Path:
        return self.tree / ("llmexport.py" if (self.tree / "llmexport.py").exists() else FIRST_SCRIPT)

    @property
    def first_generation(self) -> bool:
        """2.9.x's exporter: a model --type, and conversion in-process through whatever `_tools` it imports."""
        return self.script.name == FIRST_SCRIPT

    @functools.cached_property
    def tree_digest(self) -> str:
        """The exporter's code (read once, not once per export)."""
        return tree_digest(self.tree)


def with_installed_tools(exporter: Exporter, toolchain_id: str, python: tuple[str, ...]) -> Exporter:
    """`exporter` converting with another toolchain's `_tools` (the `pypi-tools` variant: what 2.9.x's exporter
    imports where that toolchain's PyMNN is installed)."""
    return replace(exporter, python=python, identity=f"{exporter.identity} with {toolchain_id}",
                   converter_note=f"converted with {toolchain_id}'s _tools")


def exporter_tree(record: ToolchainRecord, root: Path) -> Path:
    """transformers/llm/export of the toolchain's MNN (a source toolchain's commit, a release's tag), extracted once
    under `root` from its repository ($MNN_MATRIX_MNN_REPO, if set): a tree already there needs no repository.
    Raises SourceError."""
    provenance = record.provenance
    if record.kind == "source":
        source = Source.of(provenance.get("repository") or UPSTREAM, provenance["sha"])
        name = provenance["sha"][:12]
    else:
        source = Source.of(UPSTREAM, record.version)
        name = f"{record.version}-{hashlib.sha256(source.location.encode()).hexdigest()[:8]}"
    target = root / name
    if not (target / EXPORT_DIR).is_dir():
        sha = source.resolve()
        partial = root / f".{name}.partial"
        missing = source.export(sha, partial, (EXPORT_DIR,))
        if not (partial / EXPORT_DIR).is_dir():
            raise SourceError(f"{source.location} has no {EXPORT_DIR} at {record.version} ({sha[:12]})"
                              + (f"; it lacks {len(missing)} files" if missing else ""))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        shutil.rmtree(root / f"{partial.name}.git", ignore_errors=True)  # a remote repository's one-commit fetch
    return target / EXPORT_DIR


def write_converter(path: Path, python: tuple[str, ...]) -> Path:
    """The `--mnnconvert` executable: the toolchain's converter through its `_tools` extension."""
    path.write_text("#!/bin/sh\n# mnnconvert for MNN's LLM exporter: the toolchain's own converter, no telemetry\n"
                    f"exec {shlex.join([*python, '-c', CONVERT])} \"$@\"\n")
    path.chmod(0o755)
    return path


def tree_digest(tree: Path) -> str:
    hashed = hashlib.sha256()
    for path in sorted(tree.rglob("*.py")):
        hashed.update(str(path.relative_to(tree)).encode() + path.read_bytes())
    return hashed.hexdigest()[:12]


def ensure_extras(env: ExporterEnv, legacy: bool = False) -> Path:
    """The exporter's extra packages, installed beside the exporter venv (added to its path when exporting); for
    the legacy venv, with the TorchScript default as its sitecustomize. Raises ExporterEnvError."""
    target = env.directory.parent / f"{env.directory.name}-llm-extras"
    marker = target / "mnn-matrix-extras.json"
    if not marker.exists():
        with target.with_suffix(".log").open("w") as log:
            run_step([str(env.python), *PIP_INSTALL, "-q", "--no-deps", "--target", str(target), *EXTRAS], log,
                     "pip could not install the exporter's extras", ExporterEnvError)
        marker.write_text(json.dumps(EXTRAS))
    if legacy:
        shutil.copyfile(SITECUSTOMIZE, target / "sitecustomize.py")
    return target


def export(exporter: Exporter, model: BuiltLlm, variant: LlmVariant, root: Path, fresh: bool = False) -> Package:
    """The package of `model` by `exporter` with `variant`'s flags and the toolchain's converter (made again if
    `fresh`, else cached)."""
    env = exporter.env
    key = digest(exporter.tree_digest, model.digest, variant.flags, exporter.identity, env.directory.name,
                 exporter.legacy, RUN_SETTINGS, code_digest(EXPORT_CODE))[:16]
    directory = root / f"{exporter.toolchain}-{model.spec.name}-{variant.id}-{key}"
    record = directory.parent / f"{directory.name}.json"
    first = FIRST_EXPORTER_NOTE.format(type=FIRST_EXPORTER_TYPES[model.spec.arch]) if exporter.first_generation else ""
    base = dict(exporter=exporter.toolchain, model=model.spec.name, variant=variant.id, directory=directory,
                note="; ".join(filter(None, (LEGACY_NOTE if exporter.legacy else "", first, exporter.converter_note))))
    if record.exists() and not fresh:
        return Package(**base, **json.loads(record.read_text()))
    source = exporter.script.read_text()
    missing = [flag for flag in variant.flags if flag.startswith("--") and f"'{flag}'" not in source]
    if missing:
        return _remember(record, Package(**base, ok=False, reason=f"this exporter has no {' '.join(missing)}",
                                         applies=False))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    wrapper = write_converter(directory.parent / f"{directory.name}.mnnconvert", exporter.python)
    path = legacy_model(model.directory, root.parent / "legacy-models") if exporter.legacy else model.directory
    environment = {**os.environ, **OFFLINE, "PYTHONPATH": str(exporter.extras)}
    if exporter.first_generation:
        argv, cwd, added = _first_exporter_command(exporter, model, path, directory, wrapper)
        environment.update(added)
    else:
        argv, cwd = [str(env.python), exporter.script.name, "--path", str(path), "--dst_path", str(directory),
                     "--export", "mnn", "--mnnconvert", str(wrapper), *variant.flags], exporter.tree
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=EXPORT_TIMEOUT_S, env=environment)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        output, code = str(expired.stdout or "") + str(expired.stderr or ""), "timeout"
    seconds = round(time.perf_counter() - start, 2)
    (directory.parent / f"{directory.name}.log").write_text(output)
    config = directory / ("config.json" if (directory / "config.json").exists() else "llm_config.json")
    if not ((directory / "llm.mnn").exists() and config.exists()):
        reason = next((line.strip() for line in reversed(output.splitlines()) if "Error" in line or "error" in line),
                      f"exit code {code}, no llm.mnn written")
        return _remember(record, Package(**base, ok=False, reason=f"export failed: {reason}", log_tail=tail(output),
                                         export_s=seconds))
    # 2.9.x's runtime reads llm_config.json by default and takes its other files' names from the config we write
    settings = json.loads(config.read_text()) if config.name == "config.json" else {}
    (directory / RUN_CONFIG).write_text(json.dumps({**settings, **RUN_SETTINGS}, indent=2))
    return _remember(record, Package(**base, ok=True, log_tail=tail(output), export_s=seconds))


# 2.9.x's exporter (llm_export.py) takes a model --type and copies llm_models/<type>/* (the type's modeling code and
# its stock model's config.json) over the model before loading it. Our tiny models are of these types; they take the
# type's modeling code with their own config (the stock config would give them the stock model's shapes).
FIRST_EXPORTER_TYPES = {"qwen2-tied": "Qwen2-0_5B-Instruct", "qwen2": "Qwen2-7B-Instruct",
                        "llama": "TinyLlama-1_1B-Chat"}
FIRST_EXPORTER_NOTE = ("2.9.x's exporter: model type {type}, its modeling code with the tiny model's own config.json "
                       "(its auto_map naming the type's config class)")
TOOLS_SHIM = Path(__file__).with_name("tools_shim.py")


def auto_map(stock: dict, types: Path) -> dict[str, str]:
    """The type's auto_map, with its configuration class where it ships one but does not map it (TinyLlama's): since
    4.4x transformers refuses remote model code whose config class is not the config it loaded."""
    mapped = dict(stock.get("auto_map", {}))
    for module in sorted(types.glob("configuration_*.py")):
        found = re.search(r"^class (\w+Config)\(PretrainedConfig\)", module.read_text(), re.MULTILINE)
        if found:
            mapped.setdefault("AutoConfig", f"{module.stem}.{found[1]}")
    return mapped


def _first_exporter_command(exporter: Exporter, model: BuiltLlm, path: Path, directory: Path, wrapper: Path
                            ) -> tuple[list[str], Path, dict[str, str]]:
    """2.9.x's command line, its working directory and environment: a work directory beside the package that holds
    llm_models/<type>/, a copy of the model named as its type (the exporter writes into it) and the `_tools` it
    converts with."""
    kind = FIRST_EXPORTER_TYPES[model.spec.arch]
    work = directory.parent / f"{directory.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(path, work / kind)
    types = work / "llm_models" / kind
    shutil.copytree(exporter.tree / "llm_models" / kind, types, ignore=shutil.ignore_patterns("config.json"))
    stock = json.loads((exporter.tree / "llm_models" / kind / "config.json").read_text())
    config = json.loads((path / "config.json").read_text())
    (types / "config.json").write_text(json.dumps({**config, "auto_map": auto_map(stock, types)}, indent=2))
    shutil.copyfile(TOOLS_SHIM, work / "_tools.py")
    output = os.path.relpath(directory, work)  # it writes to f"./{path}/...": a path relative to its cwd
    return ([str(exporter.env.python), str(exporter.script), "--path", str(work / kind), "--type", kind, "--export",
             "--export_mnn", "--onnx_path", output, "--mnn_path", output], work,
            {"PYTHONPATH": f"{work}{os.pathsep}{exporter.extras}", "MNN_MATRIX_CONVERTER": str(wrapper)})


_LEGACY_COPY = threading.Lock()


def legacy_model(directory: Path, root: Path) -> Path:
    """The model as transformers 4.x reads it: the same files, with its tokenizer's class named as 4.x names it
    (5.x writes `TokenizersBackend`, a class 4.x does not have; the tokenizer itself is unchanged)."""
    target = root / directory.name
    with _LEGACY_COPY:  # exports run on several threads
        if (target / "tokenizer_config.json").exists():
            return target
        partial = root / f".{directory.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(directory, partial)
        config = json.loads((partial / "tokenizer_config.json").read_text())
        (partial / "tokenizer_config.json").write_text(json.dumps({**config,
                                                                    "tokenizer_class": "PreTrainedTokenizerFast"}))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        return target


def _remember(record: Path, package: Package) -> Package:
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"ok": package.ok, "reason": package.reason, "log_tail": package.log_tail,
                                  "export_s": package.export_s, "applies": package.applies}))
    return package
