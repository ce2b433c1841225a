"""Docker, through its Python SDK: a client with errors that say how to fix them, and workers as
container processes."""

from __future__ import annotations

import contextlib
import os

import docker
import docker.errors
import requests
from docker.models.containers import Container

SOCKET = "/var/run/docker.sock"


class DockerUnavailable(Exception):
    """No usable Docker daemon; the message says how to start one or get access."""


def client(timeout: int = 600) -> docker.DockerClient:
    """A connected client, or DockerUnavailable with what to do about it."""
    host = os.environ.get("DOCKER_HOST", f"unix://{SOCKET}")
    try:
        connection = docker.from_env(timeout=timeout)
        connection.ping()
        return connection
    except docker.errors.DockerException as error:
        raise DockerUnavailable(explain(error, host)) from None


def explain(error: Exception, host: str) -> str:
    text = str(error)
    if "Permission denied" in text or "PermissionError" in text:
        return (f"no permission to use the Docker daemon at {host}: add yourself to the docker group "
                "(`sudo usermod -aG docker $USER`, then log in again) or run as root")
    return (f"no Docker daemon at {host}: start one (`sudo systemctl start docker`, or `sudo dockerd &`; "
            "install it with `sudo apt-get install docker.io`), or point DOCKER_HOST at one")


class ContainerProcess:
    """A worker running in a container; return codes follow subprocess (negative = killed by that signal)."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self._code: int | None = None
        self._oom_killed = False

    def poll(self) -> int | None:
        if self._code is None:
            try:
                self.container.reload()
            except docker.errors.NotFound:
                return self._finish(-9)
            if self.container.status in ("exited", "dead"):
                return self._finish(self.container.attrs["State"]["ExitCode"])
        return self._code

    def wait(self, timeout: float) -> int | None:
        if self._code is not None:
            return self._code
        try:
            return self._finish(self.container.wait(timeout=max(timeout, 0.01))["StatusCode"])
        except (requests.exceptions.RequestException, docker.errors.APIError):  # not done in time
            return self.poll()

    def kill(self) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self.container.kill()

    def limit_memory(self, limit_mb: int) -> bool:
        """The container's cgroup holds it to `limit_mb` MiB, swap included (no swapping instead)."""
        self.container.update(mem_limit=f"{limit_mb}m", memswap_limit=f"{limit_mb}m")
        return True

    def resident_mb(self) -> float | None:
        return None  # the cgroup enforces the cap; nothing to watch

    def oom_killed(self) -> bool:
        return self._oom_killed

    def _finish(self, status: int) -> int:
        """Docker reports death by signal N as 128 + N; subprocess as -N. Reads OOMKilled before removing it."""
        self._code = -(status - 128) if status > 128 else status
        with contextlib.suppress(docker.errors.APIError):
            self.container.reload()
            self._oom_killed = bool(self.container.attrs["State"].get("OOMKilled"))
        with contextlib.suppress(docker.errors.APIError):
            self.container.remove(force=True)
        return self._code
