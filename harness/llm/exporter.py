"""LLM packages: MNN's exporter (transformers/llm/export at a toolchain's release tag) run in the exporter venv on a
tiny model, driven with that toolchain's own converter through a wrapper that calls its `_tools` extension (never
`MNN.tools.mnnconvert`, which pip-installs and uploads telemetry). Cached by exporter tree, model, variant and
converter identity."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.exporter_env import OFFLINE, ExporterEnv
from harness.judge import tail
from harness.llm.models import NEW_TOKENS, BuiltLlm
from harness.sources import REPO_VARIABLE

EXPORT_DIR = "transformers/llm/export"
MIRROR = Path("/work/.mirror/alibaba+MNN/repo")  # the developer machines' snapshot, when $MNN_MATRIX_MNN_REPO is unset
EXTRAS = ("yaspin==3.5.1", "termcolor==3.3.0")  # the exporter's spinner: all it needs beyond the exporter venv
EXPORT_TIMEOUT_S = 600
WRAPPER = """#!{python}
# mnnconvert for MNN's LLM exporter: the toolchain's own converter through its C extension, no telemetry.
import sys
import _tools
_tools.mnnconvert(["mnnconvert", *sys.argv[1:]])
"""
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
    LlmVariant("default", (), "the exporter's defaults (4-bit weights from 3.x)"),
    LlmVariant("q8", ("--quant_bit", "8"), "8-bit weights"),
    LlmVariant("q8-lm8", ("--quant_bit", "8", "--lm_quant_bit", "8"), "8-bit weights and lm_head"),
    LlmVariant("fp16", ("--quant_bit", "16"), "float16 weights"),
    LlmVariant("compat-c4", ("--disable_transformer_c4",), "newer exporters' switch for older engines"),
)}


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
    cached: bool = False
    applies: bool = True  # False: the variant's switch is not in this exporter (its cells are not-run)

    @property
    def config(self) -> Path:
        return self.directory / RUN_CONFIG


def repository() -> Path | None:
    """The MNN git repository exporters are taken from."""
    chosen = os.environ.get(REPO_VARIABLE)
    path = Path(chosen) if chosen else MIRROR
    return path if path.exists() else None


def exporter_tree(ref: str, root: Path) -> Path | None:
    """transformers/llm/export at `ref` (extracted once under `root`), or None if the repository lacks it."""
    target = root / ref
    if (target / "llmexport.py").exists() or (target / "llm_export.py").exists():
        return target
    repo = repository()
    if repo is None:
        return None
    archive = subprocess.run(["git", f"--git-dir={repo}", "archive", "--format=tar", ref, EXPORT_DIR],
                             capture_output=True, check=False)
    if archive.returncode != 0 or not archive.stdout:
        return None
    partial = root / f".{ref}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(partial, filter="data")
    partial.joinpath(EXPORT_DIR).rename(target) if not target.exists() else None
    shutil.rmtree(partial, ignore_errors=True)
    return target


def tree_digest(tree: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(tree.rglob("*.py")):
        digest.update(str(path.relative_to(tree)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_extras(env: ExporterEnv) -> Path:
    """The exporter's extra packages, installed beside the exporter venv (added to its path when exporting)."""
    target = env.directory.parent / f"{env.directory.name}-llm-extras"
    marker = target / "mnn-matrix-extras.json"
    if not marker.exists():
        subprocess.run([str(env.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                        "--target", str(target), *EXTRAS], capture_output=True, check=True)
        marker.write_text(json.dumps(EXTRAS))
    return target


def export(tree: Path, model: BuiltLlm, variant: LlmVariant, exporter: str, converter_python: Path,
           converter_identity: str, env: ExporterEnv, extras: Path, root: Path) -> Package:
    """The package of `model` by the exporter in `tree` with `variant`'s flags and the toolchain's converter."""
    script = "llmexport.py" if (tree / "llmexport.py").exists() else "llm_export.py"
    key = hashlib.sha256(json.dumps([tree_digest(tree), model.digest, variant.flags, converter_identity,
                                     RUN_SETTINGS]).encode()).hexdigest()[:16]
    directory = root / f"{exporter}-{model.spec.name}-{variant.id}-{key}"
    record = directory.parent / f"{directory.name}.json"
    base = dict(exporter=exporter, model=model.spec.name, variant=variant.id, directory=directory)
    if record.exists():
        return Package(**base, **json.loads(record.read_text()), cached=True)
    source = (tree / script).read_text()
    missing = [flag for flag in variant.flags if flag.startswith("--") and f"'{flag}'" not in source]
    if missing:
        return _remember(record, Package(**base, ok=False, reason=f"this exporter has no {' '.join(missing)}",
                                         applies=False))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    wrapper = directory.parent / f"{directory.name}.mnnconvert"
    wrapper.write_text(WRAPPER.format(python=converter_python))
    wrapper.chmod(0o755)
    argv = [str(env.python), script, "--path", str(model.directory), "--dst_path", str(directory), "--export", "mnn",
            "--mnnconvert", str(wrapper), *variant.flags]
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=tree, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=EXPORT_TIMEOUT_S, env={**os.environ, **OFFLINE, "PYTHONPATH": str(extras)})
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        output, code = str(expired.stdout or "") + str(expired.stderr or ""), "timeout"
    seconds = round(time.perf_counter() - start, 2)
    (directory.parent / f"{directory.name}.log").write_text(output)
    made = (directory / "llm.mnn").exists() and (directory / "config.json").exists()
    if not made:
        reason = next((line.strip() for line in reversed(output.splitlines()) if "Error" in line or "error" in line),
                      f"exit code {code}, no llm.mnn written")
        return _remember(record, Package(**base, ok=False, reason=f"export failed: {reason}", log_tail=tail(output),
                                         export_s=seconds))
    config = json.loads((directory / "config.json").read_text())
    (directory / RUN_CONFIG).write_text(json.dumps({**config, **RUN_SETTINGS}, indent=2))
    return _remember(record, Package(**base, ok=True, log_tail=tail(output), export_s=seconds))


def _remember(record: Path, package: Package) -> Package:
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"ok": package.ok, "reason": package.reason, "log_tail": package.log_tail,
                                  "export_s": package.export_s, "applies": package.applies}))
    return package
