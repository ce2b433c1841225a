"""The parent's side of a worker: start it, send it requests, and survive it dying."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from harness.worker import recv_message, send_message

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # MNN's own threads are set per request
TAIL_LINES = 30


class Process(Protocol):
    """A started worker process, wherever it runs; return codes follow subprocess (negative = signal)."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None: ...

    def kill(self) -> None: ...


class LocalProcess:
    """A worker started with subprocess, in a process group of its own."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class Launcher(Protocol):
    """Something that can start `worker.py` connected to a socket: a venv, or a container image."""

    def launch(self, socket_path: Path, log_path: Path) -> Process: ...


@dataclass(frozen=True)
class Reply:
    """A worker's answer: its header (with `ok`, `log`, ...), arrays, and the wall time it took."""

    header: dict
    arrays: dict[str, np.ndarray]
    wall_s: float


class WorkerLost(Exception):
    """The worker died (`crash`) or was killed for taking too long (`timeout`) during a request."""

    def __init__(self, kind: str, detail: str, log_tail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.log_tail = kind, detail, log_tail


class WorkerStartError(Exception):
    """The worker could not start: the toolchain is unusable."""


def describe_exit(code: int | None) -> str:
    """'SIGSEGV (signal 11)' for a signal, 'exit code 1' otherwise."""
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"{signal.Signals(-code).name} (signal {-code})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Worker:
    """One persistent worker for a toolchain; started on first use and again after it is lost."""

    def __init__(self, launcher: Launcher, scratch: Path, name: str, start_timeout: float = 120,
                 max_requests: int = 2000) -> None:
        self.launcher, self.name = launcher, name
        self.socket_path = scratch / f"{name}.sock"
        self.log_path = scratch / f"{name}.log"
        self.start_timeout, self.max_requests = start_timeout, max_requests
        self.process: Process | None = None
        self.sock: socket.socket | None = None
        self.hello: dict = {}
        self.requests = 0
        self.starts = 0

    def start(self) -> dict:
        """Start the worker and return its hello message."""
        self.close()
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(1)
            listener.settimeout(0.2)
            self.process = self.launcher.launch(self.socket_path, self.log_path)
            self.starts += 1
            deadline = time.monotonic() + self.start_timeout
            while True:
                try:
                    self.sock, _ = listener.accept()
                    break
                except TimeoutError:
                    code = self.process.poll()
                    if code is not None or time.monotonic() > deadline:
                        self._kill()
                        why = describe_exit(code) if code is not None else f"no contact in {self.start_timeout:.0f}s"
                        raise WorkerStartError(f"worker did not start ({why}):\n{tail(self._read_log())}") from None
        finally:
            listener.close()
            self.socket_path.unlink(missing_ok=True)
        self.sock.settimeout(self.start_timeout)
        try:
            self.hello, _ = recv_message(self.sock)
        except (EOFError, OSError):
            code = self._kill()
            raise WorkerStartError(f"worker died while starting ({describe_exit(code)}):\n"
                                   f"{tail(self._read_log())}") from None
        self.requests = 0
        return self.hello

    def request(self, header: dict, arrays: dict | None = None, timeout: float = 120) -> Reply:
        """Send one request; raise WorkerLost if the worker crashes or exceeds `timeout`."""
        if self.sock is None or self.requests >= self.max_requests:
            self.start()
        assert self.sock is not None
        self.requests += 1
        started = time.perf_counter()
        try:
            self.sock.settimeout(timeout)
            send_message(self.sock, header, arrays)
            reply, out = recv_message(self.sock)
        except TimeoutError:
            self._kill()
            raise WorkerLost("timeout", f"no reply in {timeout:g}s", tail(self._read_log())) from None
        except (EOFError, OSError):
            code = self._kill(grace=5)
            raise WorkerLost("crash", describe_exit(code), tail(self._read_log())) from None
        return Reply(reply, out, time.perf_counter() - started)

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                send_message(self.sock, {"op": "exit"})
        if self.process is not None and self.process.wait(timeout=5) is None:
            self.process.kill()
        self._drop()

    def _kill(self, grace: float = 0) -> int | None:
        """Reap the worker, waiting `grace` seconds for it to finish dying first; return its exit code."""
        code = None
        if self.process is not None:
            code = self.process.wait(timeout=grace) if grace else self.process.poll()
            if code is None:
                self.process.kill()
                code = self.process.wait(timeout=10)
        self._drop()
        return code

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.process = None

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
