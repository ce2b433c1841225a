"""The worker pool's retry policy, on real crashes: a crash in a worker that had served earlier requests is tried
once more in a fresh worker, and counts only if it happens there too; a crash on a fresh worker is not retried."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import avgpool_without_strides, conv_model, run_request

from harness import protocol
from harness.pool import WorkerPool
from harness.supervisor import WorkerLost


@pytest.fixture
def pool(toolchains) -> WorkerPool:
    made = WorkerPool({"3.6.1": toolchains["3.6.1"]}, memory_limit_mb=1024)
    yield made
    made.close()


def _converted(pool: WorkerPool, source: Path) -> Path:
    target = source.with_suffix(".mnn")
    assert protocol.ToolReply.read(pool.request("3.6.1", protocol.convert_request(source, target))).produced
    return target


def test_a_crash_after_earlier_requests_is_retried_in_a_fresh_worker_and_counts_if_it_crashes_again(
        pool: WorkerPool, tmp_path: Path) -> None:
    crashing = _converted(pool, avgpool_without_strides(tmp_path / "pool.onnx"))  # the worker has served a request
    inputs = {"x": np.ones((1, 3, 32, 32), np.float32)}
    with pytest.raises(WorkerLost) as lost:
        pool.request("3.6.1", run_request(crashing, inputs, ["y"]), inputs)
    assert lost.value.kind == "crash" and "SIGFPE" in lost.value.detail
    assert pool.worker("3.6.1").starts == 2, "the crash was tried once more, in a fresh worker"


def test_a_crash_on_a_fresh_worker_is_not_retried(pool: WorkerPool, tmp_path: Path) -> None:
    crashing = _converted(pool, avgpool_without_strides(tmp_path / "pool.onnx"))
    worker = pool.worker("3.6.1")
    worker.max_requests = 1  # the next request starts a fresh worker: it has served nothing before the crash
    inputs = {"x": np.ones((1, 3, 32, 32), np.float32)}
    with pytest.raises(WorkerLost):
        pool.request("3.6.1", run_request(crashing, inputs, ["y"]), inputs)
    assert worker.starts == 2, "one start for the conversion, one for the crashing run; no retry"


def test_a_request_that_runs_fine_carries_no_note(pool: WorkerPool, tmp_path: Path) -> None:
    model = _converted(pool, conv_model(tmp_path / "conv.onnx"))
    inputs = {"x": np.ones((1, 8, 16, 16), np.float32)}
    reply = protocol.RunReply.read(pool.request("3.6.1", run_request(model, inputs, ["y"]), inputs), ["y"], 1)
    assert reply.ok and reply.note == "" and reply.repeats[0]["y"].shape == (1, 8, 16, 16)
