"""The workers of a run: one per thread and toolchain, and the retry policy that keeps a crash honest."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Mapping

from harness.supervisor import Reply, Worker, WorkerLost
from harness.toolchains import Toolchain
from harness.workspace import scratch_dir


class WorkerPool:
    """Persistent workers, one per (thread, toolchain), each replaced after `worker_requests` requests."""

    def __init__(self, toolchains: Mapping[str, Toolchain], memory_limit_mb: int, worker_requests: int = 2000) -> None:
        self.toolchains, self.memory_limit_mb, self.worker_requests = toolchains, memory_limit_mb, worker_requests
        self.scratch = scratch_dir("run")  # short path: socket names are limited
        self._local = threading.local()
        self._workers: list[Worker] = []
        self._lock = threading.Lock()

    def request(self, toolchain: str, header: dict, arrays: dict | None = None, timeout: float = 120,
                fresh: bool = False) -> Reply:
        """One request on this thread's worker, made crash-honest.

        A crash in a worker that had served earlier requests may be damage those requests left, so the request
        is tried once more in a fresh worker: only a crash there counts, and a reply from there says so in its
        note. `fresh` runs the request alone in a worker of its own (for tools known to damage their process).
        """
        if fresh:
            worker = self._new(toolchain, f"{toolchain}-{threading.get_ident()}-solo")
            try:
                return worker.request(header, arrays, timeout)
            finally:
                worker.close()
        worker = self.worker(toolchain)
        try:
            return worker.request(header, arrays, timeout)
        except WorkerLost as lost:
            served = worker.requests - 1
            if lost.kind != "crash" or served == 0:
                raise
            reply = worker.request(header, arrays, timeout)  # a fresh process: the worker restarts
            return dataclasses.replace(reply, note=f"crashed ({lost.detail}) in a worker that had served {served} "
                                                   "earlier requests; a fresh worker ran it without crashing")

    def worker(self, toolchain: str) -> Worker:
        """This thread's worker for `toolchain`."""
        workers = self._local.__dict__.setdefault("workers", {})
        if toolchain not in workers:
            workers[toolchain] = self._new(toolchain, f"{toolchain}-{threading.current_thread().name}",
                                           self.worker_requests)
            with self._lock:
                self._workers.append(workers[toolchain])
        return workers[toolchain]

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _new(self, toolchain: str, name: str, max_requests: int = 2000) -> Worker:
        return Worker(self.toolchains[toolchain], self.scratch, name, max_requests=max_requests,
                      memory_limit_mb=self.memory_limit_mb)
