"""The parent's side of a worker: start it, send it requests, and survive it dying or going over its memory cap.

Every worker has a memory cap, watched: while a request is in flight the parent reads the worker's resident
memory every `MEMORY_TICK_S` (a forked worker's through its fork server, in the server's pid namespace) and kills
it at the cap, so the kill is always attributed. A worker that is a container of its own is instead held to the
cap by its cgroup (Docker's `mem_limit`, no swap), and the container's `OOMKilled` says when that fired; a fork
server's container has a backstop limit for all its children (harness/forkserver.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from harness.judge import tail
from harness.worker import recv_message, send_message

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
WORKER_ENVIRONMENT = {  # MNN's own threads are set per request; malloc perturbation: see worker.PERTURB_BYTES
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
    "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.perturb=165"}
MEMORY_TICK_S = 0.05  # how often a local worker's resident memory is read during a request
MEMORY_CAP_CEILING_MB = 4096
OOM_SCORE_ADJ = 1000  # should anything slip through, the kernel's OOM killer picks a worker before anything else
_RESIDENT = re.compile(r"^VmRSS:\s+(\d+) kB", re.MULTILINE)


ADDRESS_MARGIN_MB = 1024  # a forked worker may map its memory cap plus this (an idle worker maps ~130 MiB)


def default_jobs() -> int:
    """Cells at once: four per core. A thread's cell spends much of its time in the harness (feeding, judging,
    storing) while its worker waits; with one per core, a quarter of both cores stayed idle (`nox -s bench`)."""
    return 4 * (os.cpu_count() or 1)


def default_memory_limit_mb() -> int:
    """4 GiB, or the machine's memory divided by the default number of cells at once plus the harness, whichever is
    smaller: all of them at their cap together still fit."""
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return min(MEMORY_CAP_CEILING_MB, total_mb // (default_jobs() + 1))


class Process(Protocol):
    """A started worker process, wherever it runs; return codes follow subprocess (negative = signal)."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None: ...

    def kill(self) -> None: ...

    def limit_memory(self, limit_mb: int) -> bool:
        """Have the kernel hold the process to `limit_mb` MiB if it can; False: the parent must watch it."""

    def resident_mb(self) -> float | None:
        """Resident memory now (None when unknown or gone)."""

    def oom_killed(self) -> bool:
        """Whether the kernel killed the process for going over its memory limit."""


class LocalProcess:
    """A worker started with subprocess, in a process group of its own; its memory is watched by the parent."""

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

    def limit_memory(self, limit_mb: int) -> bool:
        """The parent watches this one; should anything slip through, the kernel's OOM killer picks it first."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.popen.pid}/oom_score_adj").write_text(str(OOM_SCORE_ADJ))
        return False

    def resident_mb(self) -> float | None:
        try:
            found = _RESIDENT.search(Path(f"/proc/{self.popen.pid}/status").read_text())
        except OSError:
            return None
        return int(found[1]) / 1024 if found else None

    def oom_killed(self) -> bool:
        return False


class Launcher(Protocol):
    """Something that can start `worker.py` connected to a socket: a venv, or a container image."""

    def launch(self, socket_path: Path, log_path: Path) -> Process: ...


@dataclass(frozen=True)
class Reply:
    """A worker's answer: its header (with `ok`, `log`, ...), arrays, the wall time it took, and the harness's
    note on how it was got (read it with harness.protocol)."""

    header: dict
    arrays: dict[str, np.ndarray]
    wall_s: float
    note: str = ""


class WorkerLost(Exception):
    """The worker died (`crash`), or was killed for taking too long (`timeout`) or for going over its memory
    cap (`out-of-memory`), during a request."""

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


class _OverCap(Exception):
    def __init__(self, resident_mb: float) -> None:
        self.resident_mb = resident_mb


class Worker:
    """One persistent worker for a toolchain, under a memory cap; started on first use and again after it is lost.

    A toolchain whose `forks` is True (`fork` None) forks it from a fork server (harness/forkserver.py) shared by
    the Workers of that toolchain in `scratch`, so a restart costs milliseconds; the last one to close stops it.
    """

    def __init__(self, launcher: Launcher, scratch: Path, name: str, start_timeout: float = 120,
                 max_requests: int = 2000, memory_limit_mb: int | None = None, fork: bool | None = None,
                 address_margin_mb: int | None = ADDRESS_MARGIN_MB) -> None:
        self.launcher, self.name = launcher, name
        self.fork = getattr(launcher, "forks", False) if fork is None else fork
        self._server = None  # the fork server this Worker holds, while it holds one
        self.memory_limit_mb = memory_limit_mb or default_memory_limit_mb()
        self.address_margin_mb = address_margin_mb  # a forked worker's address space: cap + margin (None: unlimited)
        self.watch_memory = True
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
        self._stop()
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(1)
            listener.settimeout(0.2)
            self.process = self._launch()
            self.starts += 1
            self.watch_memory = not self.process.limit_memory(self.memory_limit_mb)
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
        """Send one request; raise WorkerLost if the worker crashes, exceeds `timeout` or goes over its memory cap."""
        if self.sock is None or self.requests >= self.max_requests:
            self.start()
        assert self.sock is not None and self.process is not None
        self.requests += 1
        started = time.perf_counter()
        process = self.process
        try:
            self.sock.settimeout(timeout)
            send_message(self.sock, header, arrays)
            self._await_reply(started + timeout)
            reply, out = recv_message(self.sock)
        except TimeoutError:
            self._kill()
            raise WorkerLost("timeout", f"no reply in {timeout:g}s", tail(self._read_log())) from None
        except _OverCap as over:
            self._kill()
            raise WorkerLost("out-of-memory", f"worker went over its {self.memory_limit_mb} MiB memory cap "
                             f"({over.resident_mb:.0f} MiB resident) and was killed", tail(self._read_log())) from None
        except (EOFError, OSError):
            code = self._kill(grace=5)
            if process.oom_killed():
                raise WorkerLost("out-of-memory", f"worker went over its {self.memory_limit_mb} MiB memory cap "
                                 "(killed by the kernel)", tail(self._read_log())) from None
            raise WorkerLost("crash", describe_exit(code), tail(self._read_log())) from None
        return Reply(reply, out, time.perf_counter() - started)

    def _await_reply(self, deadline: float) -> None:
        """Wait until the reply starts arriving, reading a watched worker's memory as it works."""
        assert self.sock is not None and self.process is not None
        readable = select.poll()
        readable.register(self.sock, select.POLLIN)  # a worker's death reads as POLLHUP, which poll always reports
        while not readable.poll(MEMORY_TICK_S * 1000):
            resident = self.process.resident_mb() if self.watch_memory else None
            if resident is not None and resident > self.memory_limit_mb:
                raise _OverCap(resident)
            if time.perf_counter() > deadline:
                raise TimeoutError

    def _launch(self) -> Process:
        if not self.fork:
            return self.launcher.launch(self.socket_path, self.log_path)
        from harness import forkserver  # (it builds on this module)

        if self._server is None:
            self._server = forkserver.acquire(self.launcher, self.socket_path.parent, self.memory_limit_mb)
        limit = None if self.address_margin_mb is None else self.memory_limit_mb + self.address_margin_mb
        return self._server.launch(self.socket_path, self.log_path, limit)

    def close(self) -> None:
        """Stop the worker, and let go of its fork server (the last Worker to let go stops it)."""
        self._stop()
        if self._server is not None:
            from harness import forkserver

            server, self._server = self._server, None
            forkserver.release(server, self.memory_limit_mb)

    def _stop(self) -> None:
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
