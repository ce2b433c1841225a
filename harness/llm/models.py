"""The tiny decoders of the `llm` suite, built (seeded, offline) in the exporter venv by make_models.py and cached by
what makes them: the script, the spec and the exporter venv's identity."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.exporter_env import OFFLINE, ExporterEnv
from harness.worker import HARD_CODED_PENALTY

SCRIPT = Path(__file__).resolve().parent / "make_models.py"
PROMPT = (5, 17, 42, 99, 120, 7, 64, 201)  # fixed token ids, fed to every runtime (no tokenizer in the loop)
NEW_TOKENS = 8


@dataclass(frozen=True)
class TinyLlm:
    name: str
    arch: str  # qwen2-tied, qwen2 (untied embeddings), llama
    seed: int = 0


TINY = {m.name: m for m in (TinyLlm("tiny-qwen2-tied", "qwen2-tied"), TinyLlm("tiny-qwen2", "qwen2", 1),
                            TinyLlm("tiny-llama", "llama", 2))}


@dataclass(frozen=True)
class BuiltLlm:
    spec: TinyLlm
    directory: Path
    digest: str  # what the model is made from: script, spec, prompt, exporter venv

    @functools.cached_property
    def reference(self) -> dict:
        """transformers' fp32 greedy ids for PROMPT (`ids`; `penalized_ids` with MNN's hard-coded repetition penalty
        before 3.1) and the first step's logits."""
        return json.loads((self.directory / "reference.json").read_text())


def build_models(specs: list[TinyLlm], root: Path, env: ExporterEnv) -> dict[str, BuiltLlm]:
    """Each model's directory under `root`, built unless already there (one exporter-venv process for all)."""
    built = {}
    for spec in specs:
        recipe = json.dumps([SCRIPT.read_text(), asdict(spec), PROMPT, NEW_TOKENS, HARD_CODED_PENALTY,
                             env.directory.name])
        digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
        built[spec.name] = BuiltLlm(spec, root / f"{spec.name}-{digest}", digest)
    missing = [b for b in built.values() if not (b.directory / "reference.json").exists()]
    if missing:
        root.mkdir(parents=True, exist_ok=True)
        jobs = root / "jobs.json"
        jobs.write_text(json.dumps([{"name": b.spec.name, "arch": b.spec.arch, "seed": b.spec.seed,
                                     "dir": str(b.directory), "prompt": list(PROMPT), "new_tokens": NEW_TOKENS,
                                     "penalty": HARD_CODED_PENALTY}
                                    for b in missing]))
        with (root / "build.log").open("w") as log:
            subprocess.run([str(env.python), "-I", str(SCRIPT), str(jobs)], stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, env={**os.environ, **OFFLINE}, check=False)
    return {name: b for name, b in built.items() if (b.directory / "reference.json").exists()}
