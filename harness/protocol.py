"""The worker protocol, the parent's side: every request to a worker is built here, and every reply read here,
into small typed results. The worker's side is the request handlers of harness/worker.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.supervisor import Reply


def describe_request() -> dict:
    return {"op": "describe"}


def convert_request(src: Path, dst: Path, flags: Sequence[str] = (), attempt: int = 0) -> dict:
    """Convert an ONNX file; `attempt` picks the malloc perturbation (a second attempt sees other garbage)."""
    return {"op": "convert", "src": str(src), "dst": str(dst), "flags": list(flags), "attempt": attempt}


def quantize_request(src: Path, dst: Path, config: Path, attempt: int = 0) -> dict:
    return {"op": "quantize", "src": str(src), "dst": str(dst), "config": str(config), "attempt": attempt}


def run_request(model: Path, api: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], threads: int = 1,
                precision: str = "normal", memory: str = "normal", repeat: int = 1) -> dict:
    """Run a converted model with one API; the inputs travel as the request's arrays."""
    return {"op": "run", "model": str(model), "api": api, "inputs": list(inputs), "outputs": list(outputs),
            "threads": threads, "precision": precision, "memory": memory, "repeat": repeat}


@dataclass(frozen=True)
class ToolReply:
    """What a convert or quantize request came to: success is the file written, never the tool's return value."""

    produced: bool
    size_bytes: int
    seconds: float | None
    log: str
    error: str
    wall_s: float
    note: str = ""

    @classmethod
    def read(cls, reply: Reply) -> ToolReply:
        header = reply.header
        return cls(produced=bool(header["ok"] and header.get("produced")), size_bytes=header.get("size_bytes", 0),
                   seconds=header.get("seconds"), log=header["log"], error=header.get("error", ""),
                   wall_s=reply.wall_s, note=reply.note)


@dataclass(frozen=True)
class RunReply:
    """What a run request came to: each repeat's outputs, or the stage and error of a failure."""

    ok: bool
    log: str
    wall_s: float
    stage: str = ""
    error: str = ""
    load_s: float | None = None
    run_s: list[float] = field(default_factory=list)
    fed: dict[str, str] = field(default_factory=dict)
    repeats: list[dict[str, np.ndarray]] = field(default_factory=list)
    note: str = ""

    @classmethod
    def read(cls, reply: Reply, outputs: Sequence[str], repeat: int) -> RunReply:
        header = reply.header
        if not header["ok"]:
            return cls(False, header["log"], reply.wall_s, header["stage"], header["error"], note=reply.note)
        repeats = [{name: reply.arrays[f"{i}/{name}"] for name in outputs} for i in range(repeat)]
        return cls(True, header["log"], reply.wall_s, load_s=header["load_s"], run_s=header["run_s"],
                   fed=header["fed"], repeats=repeats, note=reply.note)


@dataclass(frozen=True)
class Description:
    """A toolchain's versions and capabilities ('convert', 'quantize', 'run', 'llm') as its worker reports them,
    and its converter's --help text."""

    mnn_version: str
    numpy_version: str
    python: str
    platform: str
    capabilities: tuple[str, ...]
    converter_help: str

    @classmethod
    def read(cls, reply: Reply) -> Description:
        header = reply.header
        return cls(header["mnn_version"], header["numpy_version"], header["python"], header["platform"],
                   tuple(header["capabilities"]), header["log"])


def llm_request(config: Path, prompt: Sequence[int], new_tokens: int) -> dict:
    """Load an LLM package with `MNN.llm` by its (harness-written) config.json and generate greedily."""
    return {"op": "llm", "config": str(config), "prompt": [int(i) for i in prompt], "new_tokens": new_tokens}


@dataclass(frozen=True)
class LlmReply:
    """What an llm request came to: the generated ids and the first step's logits (None where `forward` is
    missing), or the stage and error of a failure."""

    ok: bool
    log: str
    wall_s: float
    stage: str = ""
    error: str = ""
    ids: list[int] = field(default_factory=list)
    logits: np.ndarray | None = None
    load_s: float | None = None
    generate_s: float | None = None
    note: str = ""
    repetition_penalty: float = 1.0  # what the runtime's greedy sampler applies (a hard-coded 1.1 before 3.1)

    @classmethod
    def read(cls, reply: Reply) -> LlmReply:
        header = reply.header
        if not header["ok"]:
            return cls(False, header["log"], reply.wall_s, header["stage"], header["error"], note=reply.note)
        return cls(True, header["log"], reply.wall_s, ids=header["ids"],
                   logits=reply.arrays.get("logits") if header["logits"] else None, load_s=header["load_s"],
                   generate_s=header["generate_s"], note=reply.note,
                   repetition_penalty=header.get("repetition_penalty", 1.0))
