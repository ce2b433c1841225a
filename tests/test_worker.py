"""The worker, for real: persistent, captures native output, survives crashes and hangs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import avgpool_without_strides, conv_model, run_request

from harness import protocol
from harness.supervisor import WORKER_SCRIPT, WorkerLost
from harness.worker import recv_message, send_message


def test_messages_carry_arrays_of_any_dtype_and_shape() -> None:
    import socket

    left, right = socket.socketpair()
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array(7, dtype=np.int64),
              "b": np.array([True, False]), "empty": np.zeros((0, 4), np.float16)}
    send_message(left, {"op": "x", "n": 1}, arrays)
    header, got = recv_message(right)
    assert header == {"op": "x", "n": 1}
    for name, array in arrays.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array)


def test_worker_imports_only_mnn_numpy_and_the_standard_library() -> None:
    tree = ast.parse(WORKER_SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == {"numpy", "MNN", "_tools"}


def test_worker_is_persistent_and_captures_each_requests_native_output(worker_for, tmp_path: Path) -> None:
    worker = worker_for("3.6.1")
    hello = worker.start()
    assert hello["mnn_version"] == "3.6.1"
    assert "The device supports" in hello["log"]  # printed by MNN's C code at import
    model = conv_model(tmp_path / "conv.onnx")
    converted = tmp_path / "conv.mnn"
    reply = worker.request(protocol.convert_request(model, converted))
    assert reply.header["produced"] and converted.stat().st_size == reply.header["size_bytes"]
    assert "Converted Success" in reply.header["log"]
    x = np.ones((1, 8, 16, 16), np.float32)
    for api in ("module", "session"):
        reply = worker.request(run_request(converted, {"x": x}, ["y"], api, repeat=2), {"x": x})
        assert reply.header["ok"], reply.header
        assert reply.arrays["0/y"].shape == (1, 8, 16, 16) and "Converted" not in reply.header["log"]
    assert worker.starts == 1 and worker.requests == 3


def test_a_crash_costs_one_request_and_the_worker_comes_back(worker_for, tmp_path: Path) -> None:
    worker = worker_for("3.6.1")
    crashing, fine = tmp_path / "crash.mnn", tmp_path / "fine.mnn"
    worker.request(protocol.convert_request(avgpool_without_strides(tmp_path / "crash.onnx"), crashing))
    worker.request(protocol.convert_request(conv_model(tmp_path / "fine.onnx"), fine))
    first_pid = worker.hello["pid"]
    x = np.ones((1, 3, 32, 32), np.float32)
    with pytest.raises(WorkerLost) as lost:
        worker.request(run_request(crashing, {"x": x}, ["y"]), {"x": x})
    assert lost.value.kind == "crash" and "SIGFPE" in lost.value.detail
    y = np.ones((1, 8, 16, 16), np.float32)
    reply = worker.request(run_request(fine, {"x": y}, ["y"]), {"x": y})
    assert reply.header["ok"] and worker.hello["pid"] != first_pid and worker.starts == 2


def test_a_hang_is_killed_at_the_timeout_and_the_worker_comes_back(worker_for, tmp_path: Path) -> None:
    worker = worker_for("3.0.0")
    slow = tmp_path / "slow.mnn"
    worker.request(protocol.convert_request(conv_model(tmp_path / "slow.onnx", channels=64, size=128,
                                                           layers=12), slow))
    x = np.ones((1, 64, 128, 128), np.float32)
    with pytest.raises(WorkerLost) as lost:
        worker.request(run_request(slow, {"x": x}, ["y"], repeat=20), {"x": x}, timeout=0.5)
    assert lost.value.kind == "timeout"
    reply = worker.request(protocol.describe_request())
    assert reply.header["mnn_version"] == "3.0.0" and worker.starts == 2


def test_a_worker_that_cannot_start_says_why(tmp_path: Path, scratch: Path) -> None:
    from harness.supervisor import LocalProcess, Worker, WorkerStartError

    class NoMNN:
        def launch(self, socket_path: Path, log_path: Path) -> LocalProcess:
            import subprocess

            with log_path.open("w") as log:
                return LocalProcess(subprocess.Popen([sys.executable, "-I", "-c", "import MNN"], stdout=log,
                                                     stderr=log, start_new_session=True))

    with pytest.raises(WorkerStartError, match="No module named 'MNN'"):
        Worker(NoMNN(), scratch, "nomnn", start_timeout=30).start()
