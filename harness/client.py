"""A toolchain as the harness drives it. `Client.describe`, `convert`, `quantize` and `run` each send one request to
a worker in the toolchain's environment (a venv, or the container of a source build: harness.toolchains) and return
a small typed result. harness/worker.py answers there, with MNN and numpy only; harness.protocol is the wire format.

This is the one place where a worker lost to a crash, a timeout or the memory cap becomes an outcome, and where a
tool's failure is classified by its log. Over a pool (`Client.pooled`), a crash is honest only if a fresh worker
crashes too (harness.pool); over a single worker (`Client.single`: the ONNX backend, provisioning, tests), each
request is taken as it comes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import protocol, verdicts
from harness.config import Timeouts
from harness.pool import WorkerPool
from harness.records import Outcome, Verdict
from harness.supervisor import Reply, Worker, WorkerLost

Send = Callable[[dict, Mapping[str, np.ndarray] | None, float, bool], Reply]  # header, arrays, timeout, alone


@dataclass(frozen=True)
class ToolResult:
    """A convert or quantize request, judged by the file it writes: a pass, or the failure's outcome."""

    outcome: Outcome
    reply: protocol.ToolReply | None = None  # None when the worker was lost

    @property
    def passed(self) -> bool:
        return self.outcome.verdict == Verdict.PASS

    @property
    def size(self) -> int:
        return self.reply.size_bytes if self.reply else 0

    @property
    def seconds(self) -> float | None:
        return self.reply.seconds if self.reply else None

    @property
    def wall_s(self) -> float:
        return self.reply.wall_s if self.reply else 0.0

    @property
    def log(self) -> str:
        return self.reply.log if self.reply else ""


@dataclass(frozen=True)
class RunResult:
    """A run request: each repeat's outputs (`failure` None), or the outcome of the failure."""

    failure: Outcome | None
    reply: protocol.RunReply | None = None
    repeats: list[dict[str, np.ndarray]] = field(default_factory=list)


@dataclass(frozen=True)
class LlmResult:
    """An llm request: the reply (`failure` None), or the outcome of the failure."""

    failure: Outcome | None
    reply: protocol.LlmReply | None = None


class Client:
    """Requests to one toolchain's workers, with its timeouts; `scrub` takes a run's own paths out of native logs."""

    def __init__(self, send: Send, timeouts: Timeouts, scrub: Callable[[str], str] = lambda text: text) -> None:
        self.send, self.timeouts, self.scrub = send, timeouts, scrub

    @classmethod
    def pooled(cls, pool: WorkerPool, toolchain: str, timeouts: Timeouts,
               scrub: Callable[[str], str] = lambda text: text) -> Client:
        """This thread's persistent worker for `toolchain`, with the pool's crash-retry policy."""
        return cls(lambda header, arrays, timeout, alone: pool.request(toolchain, header, arrays, timeout, alone),
                   timeouts, scrub)

    @classmethod
    def single(cls, worker: Worker, timeouts: Timeouts | None = None) -> Client:
        """One worker, restarted after a loss like any other."""
        return cls(lambda header, arrays, timeout, alone: worker.request(header, arrays, timeout),
                   timeouts or Timeouts())

    def describe(self) -> protocol.Description:
        """The toolchain's versions, capabilities and converter --help (WorkerLost if its worker cannot answer)."""
        return protocol.Description.read(self.send(protocol.describe_request(), None, 120, False))

    def convert(self, src: Path, dst: Path, flags: Sequence[str] = (), attempt: int = 0) -> ToolResult:
        """MNNConvert an ONNX file to `dst`; `attempt` picks the malloc perturbation (another attempt sees other
        garbage)."""
        return self._tool("convert", protocol.convert_request(src, dst, flags, attempt))

    def quantize(self, src: Path, dst: Path, config: Path, attempt: int = 0) -> ToolResult:
        """MNN's post-training quantization tool on a converted model, alone in a fresh worker (it damages its
        process)."""
        return self._tool("quantize", protocol.quantize_request(src, dst, config, attempt), alone=True)

    def run(self, model: Path, api: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], threads: int = 1,
            precision: str = "normal", memory: str = "normal", repeat: int = 1) -> RunResult:
        """Load a converted model with one API and run it `repeat` times on `inputs`."""
        request = protocol.run_request(model, api, inputs, outputs, threads, precision, memory, repeat)
        try:
            reply = protocol.RunReply.read(self.send(request, inputs, self.timeouts.run_s, False), outputs, repeat)
        except WorkerLost as lost:
            return RunResult(verdicts.lost(lost.kind, "run", lost.detail, self.scrub(lost.log_tail)))
        if not reply.ok:
            outcome = verdicts.classify(reply.stage, self.scrub(reply.log), self.scrub(reply.error))
            return RunResult(outcome.model_copy(update={"note": reply.note}), reply)
        return RunResult(None, reply, reply.repeats)

    def llm(self, config: Path, prompt: Sequence[int], new_tokens: int) -> LlmResult:
        """Load an LLM package with MNN.llm and generate greedily from `prompt`, alone in a fresh worker (a
        package can crash its process)."""
        request = protocol.llm_request(config, prompt, new_tokens)
        try:
            reply = protocol.LlmReply.read(self.send(request, None, self.timeouts.run_s, True))
        except WorkerLost as lost:
            return LlmResult(verdicts.lost(lost.kind, "run", lost.detail, self.scrub(lost.log_tail)))
        if reply.ok:
            return LlmResult(None, reply)
        outcome = Outcome(verdict=Verdict.API_UNSUPPORTED, stage="load", reason=reply.error) if (
            reply.stage == "api") else verdicts.classify(reply.stage, self.scrub(reply.log), self.scrub(reply.error))
        return LlmResult(outcome.model_copy(update={"note": reply.note}), reply)

    def _tool(self, stage: str, request: dict, alone: bool = False) -> ToolResult:
        try:
            reply = protocol.ToolReply.read(self.send(request, None, self.timeouts.convert_s, alone))
        except WorkerLost as lost:
            return ToolResult(verdicts.lost(lost.kind, stage, lost.detail, self.scrub(lost.log_tail)))
        outcome = Outcome(verdict=Verdict.PASS, stage=stage) if reply.produced else verdicts.classify(
            stage, self.scrub(reply.log), self.scrub(reply.error))
        return ToolResult(outcome.model_copy(update={"note": reply.note}), reply)
