"""Fork servers: one process per toolchain and scratch directory (one Runner) that has imported MNN and forks a
fresh worker for each launch, so a lost worker costs a fork, not an interpreter start and an MNN import, or a
`docker run`.

The server starts through its toolchain's own launch path (a venv's python; a container with no network, the
worker script read-only), inherits `WORKER_ENVIRONMENT`, and answers for its children over a control socket:
exit status (negative: the signal, as subprocess), resident memory (read in its own pid namespace) and kill.
Every Worker of that toolchain in that directory shares it, from any thread; it stops when the last of them
closes, and after it is lost the next launch starts a new one. Its children die with it (PR_SET_PDEATHSIG).

A container's memory limit is a backstop for the whole container: the caps of the Workers sharing it (each
watched by its resident memory, as a venv worker is) plus `SERVER_MARGIN_MB` for the server and idle children.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from harness.supervisor import Process, Worker, WorkerLost, WorkerStartError

SERVER_MARGIN_MB = 512
CONTROL_TIMEOUT_S = 60
_WAIT_TICKS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)  # a crash is seen at once, a slow exit costs few asks
log = logging.getLogger(__name__)


class ForkingLauncher(Protocol):
    """A toolchain that can start `worker.py` as a fork server (`forks` is True)."""

    forks: bool

    def launch(self, socket_path: Path, log_path: Path, fork_server: bool = False) -> Process: ...


class ServerGone(Exception):
    """The fork server a child came from has died (and its children with it)."""


class _ServerLauncher:
    """Starts a toolchain's worker script in fork-server mode, through the toolchain's own launch."""

    def __init__(self, toolchain: ForkingLauncher) -> None:
        self.toolchain = toolchain

    def launch(self, socket_path: Path, log_path: Path) -> Process:
        return self.toolchain.launch(socket_path, log_path, fork_server=True)


class ForkServer:
    """A toolchain's fork server; `launch` has the signature of a Launcher and returns a ForkedProcess."""

    def __init__(self, toolchain: ForkingLauncher, scratch: Path, start_timeout: float = 120) -> None:
        self.name = f"{getattr(toolchain, 'id', 'worker')}-server"
        self._server = Worker(_ServerLauncher(toolchain), scratch, self.name, start_timeout=start_timeout,
                              max_requests=sys.maxsize, memory_limit_mb=SERVER_MARGIN_MB, fork=False)
        self._lock = threading.Lock()
        self._reserved_mb = 0  # the caps of the Workers sharing it now

    @property
    def generation(self) -> int:
        """How many servers have been started; a child belongs to the generation that forked it."""
        return self._server.starts

    def reserve(self, cap_mb: int, sign: int = 1) -> None:
        """Count a Worker's memory cap in (or, with sign -1, out of) the container's backstop, which only grows."""
        with self._lock:
            self._reserved_mb += sign * cap_mb
            wanted = self._reserved_mb + SERVER_MARGIN_MB
            if wanted > self._server.memory_limit_mb:
                self._server.memory_limit_mb = wanted
                if self._server.process is not None:
                    self._server.watch_memory = not self._server.process.limit_memory(wanted)

    def launch(self, socket_path: Path, log_path: Path, address_limit_mb: int | None = None) -> ForkedProcess:
        """Fork a worker that connects to `socket_path` with its native output in `log_path`, its address space
        limited to `address_limit_mb` (so that a single huge allocation fails at once instead of filling memory)."""
        request = {"op": "fork", "socket": str(socket_path), "log": str(log_path), "address_limit_mb": address_limit_mb}
        with self._lock:
            for attempt in (1, 2):  # a server found dead is replaced once
                if self._server.sock is None and self._server.starts:
                    log.warning("the fork server %s was lost; starting a new one", self.name)
                try:
                    reply = self._server.request(request, timeout=CONTROL_TIMEOUT_S).header
                    break
                except WorkerLost as lost:
                    if attempt == 2:
                        raise WorkerStartError(f"the fork server {self.name} died forking a worker "
                                               f"({lost.detail}):\n{lost.log_tail}") from None
            if not reply["ok"]:
                raise WorkerStartError(f"the fork server {self.name} could not fork a worker: {reply['error']}")
            return ForkedProcess(self, reply["child"], self.generation)

    def ask(self, generation: int, header: dict) -> dict:
        """One control request about a child of `generation`; ServerGone if that server is no longer there."""
        with self._lock:
            if self._server.sock is None or generation != self.generation:
                raise ServerGone
            try:
                return self._server.request(header, timeout=CONTROL_TIMEOUT_S).header
            except WorkerLost as lost:
                log.warning("the fork server %s was lost (%s); the next launch starts a new one", self.name,
                            lost.detail)
                raise ServerGone from None

    def close(self) -> None:
        """Stop the server; it kills the children still alive."""
        with self._lock:
            self._server.close()


class ForkedProcess:
    """A worker forked by a ForkServer, seen through the server (the Process protocol; thread-safe)."""

    def __init__(self, server: ForkServer, child: int, generation: int) -> None:
        self.server, self.child, self.generation = server, child, generation
        self._code: int | None = None
        self._oom_killed = False

    def poll(self) -> int | None:
        if self._code is None:
            try:
                reply = self.server.ask(self.generation, {"op": "poll", "child": self.child})
            except ServerGone:
                self._code = -9  # it died with its server (SIGKILL)
            else:
                self._code, self._oom_killed = reply["code"], reply.get("oom_killed", False)
        return self._code

    def wait(self, timeout: float) -> int | None:
        deadline, asked = time.monotonic() + timeout, 0
        while (code := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(_WAIT_TICKS_S[min(asked, len(_WAIT_TICKS_S) - 1)])
            asked += 1
        return code

    def kill(self) -> None:
        if self._code is None:
            with contextlib.suppress(ServerGone):
                self.server.ask(self.generation, {"op": "kill", "child": self.child})

    def limit_memory(self, limit_mb: int) -> bool:
        """Watched by its resident memory, like a venv worker; it inherits the server's `oom_score_adj`."""
        return False

    def resident_mb(self) -> float | None:
        try:
            return self.server.ask(self.generation, {"op": "resident", "child": self.child})["resident_mb"]
        except ServerGone:
            return None

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer took it (the server compares its cgroup's OOM-kill count)."""
        return self._oom_killed


# ---------------------------------------------------------------- one server per (toolchain, scratch directory)

_servers: dict[tuple[int, Path], tuple[ForkServer, int]] = {}  # -> (server, Workers using it)
_servers_lock = threading.Lock()


def acquire(toolchain: ForkingLauncher, scratch: Path, cap_mb: int) -> ForkServer:
    """The fork server of `toolchain` for Workers in `scratch`, made on first use; release it when done."""
    key = (id(toolchain), scratch)
    with _servers_lock:
        server, users = _servers.get(key) or (ForkServer(toolchain, scratch), 0)
        _servers[key] = (server, users + 1)
    server.reserve(cap_mb)
    return server


def release(server: ForkServer, cap_mb: int) -> None:
    """One Worker is done with `server`; the last one closes it."""
    with _servers_lock:
        key = next((key for key, (known, _) in _servers.items() if known is server), None)
        if key is None:  # closed already (close_all)
            return
        server.reserve(cap_mb, sign=-1)
        users = _servers[key][1] - 1
        if users:
            _servers[key] = (server, users)
            return
        del _servers[key]
    server.close()


@atexit.register
def close_all() -> None:
    """Stop every fork server (the Workers that use them should have closed them already)."""
    with _servers_lock:
        servers = [server for server, _ in _servers.values()]
        _servers.clear()
    for server in servers:
        server.close()
