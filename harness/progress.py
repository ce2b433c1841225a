"""Progress display for the long parts of a run, with a running tally of verdicts."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from harness.records import Verdict


class Progress:
    """Live bars on a terminal; on a plain log, a line per tenth of each task. `quiet` shows nothing."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.durations: dict[str, float] = {}  # seconds each task took, by name
        self.busy: dict[str, float] = {}  # the share of all cores' time spent busy (any process) during each task
        self.own: dict[str, float] = {}  # this process's CPU seconds per second of each task (the harness's own load)
        self.live = not quiet and self.console.is_terminal
        self._bars = RichProgress(
            TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[tally]}"),
            console=self.console, disable=not self.live)

    def __enter__(self) -> Progress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def task(self, name: str, total: int | None, done: int = 0) -> Iterator[Task]:
        """A counted task (total None: not known yet); it records how long it took under `name`, and how busy
        the machine's cores were meanwhile."""
        task = Task(self, name, total, done)
        if done:
            self.say(f"{name}: {done} of {total} found in the store (an earlier run, or resuming an interrupted one)")
        cpu, own = _cpu_times(), time.process_time()
        try:
            yield task
        finally:
            self._bars.update(task.id, tally=_tally(task.tally))
            self.durations[name] = round(time.monotonic() - task.start, 3)
            busy, total_time = (after - before for after, before in zip(_cpu_times(), cpu, strict=True))
            self.busy[name] = round(busy / total_time, 3) if total_time else 0.0
            self.own[name] = round((time.process_time() - own) / max(self.durations[name], 1e-9), 3)


class Task:
    """One bar. Call it to advance by one (or `count`), optionally tallying a verdict."""

    def __init__(self, progress: Progress, name: str, total: int | None, done: int) -> None:
        self.progress, self.name, self.total, self.done = progress, name, total, done
        self.id = progress._bars.add_task(name, total=total, completed=done, tally="")
        self.tally: Counter[str] = Counter()
        self.start = time.monotonic()
        self._step = 0
        self._lock = threading.Lock()

    def set_total(self, total: int) -> None:
        self.total = total
        self.progress._bars.update(self.id, total=total)

    def __call__(self, verdict: Verdict | None = None, count: int = 1) -> None:
        with self._lock:
            self.done += count
            if verdict is not None:
                self.tally[verdict.value] += count
            text = _tally(self.tally)
            self.progress._bars.update(self.id, advance=count, tally=text)
            step = self.done * 10 // max(self.total or 0, 1)
            if not self.progress.live and not self.progress.quiet and self.total and step > self._step:
                self._step = step
                self.progress.console.print(f"{self.name}: {self.done}/{self.total} "
                                            f"({time.monotonic() - self.start:.0f}s) {text}")


def _tally(tally: Counter[str]) -> str:
    return " ".join(f"{verdict} {count}" for verdict, count in tally.most_common())


def _cpu_times() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in clock ticks, from /proc/stat ((0, 0) where there is none)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    return sum(ticks) - idle, sum(ticks)
