"""Progress display for the long parts of a run, with a running tally of verdicts."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from harness.records import Verdict

Advance = Callable[..., None]


class Progress:
    """Live bars on a terminal; on a plain log, a line per tenth of each task. `quiet` shows nothing."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.durations: dict[str, float] = {}  # seconds each task took, by name
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
    def task(self, name: str, total: int, done: int = 0) -> Iterator[Advance]:
        """A counted task; the yielded function advances it by one, optionally tallying a verdict."""
        tally: Counter[str] = Counter()
        lock = threading.Lock()
        task = self._bars.add_task(name, total=total, completed=done, tally="")
        state = {"done": done, "step": 0, "start": time.monotonic()}
        if done:
            self.say(f"{name}: resuming, {done} of {total} already done")

        def advance(verdict: Verdict | None = None) -> None:
            with lock:
                state["done"] += 1
                if verdict is not None:
                    tally[verdict.value] += 1
                text = _tally(tally)
                self._bars.update(task, advance=1, tally=text)
                step = state["done"] * 10 // max(total, 1)
                if not self.live and not self.quiet and step > state["step"]:
                    state["step"] = step
                    self.console.print(f"{name}: {state['done']}/{total} "
                                       f"({time.monotonic() - state['start']:.0f}s) {text}")

        try:
            yield advance
        finally:
            self._bars.update(task, tally=_tally(tally))
            self.durations[name] = round(time.monotonic() - state["start"], 3)


def _tally(tally: Counter[str]) -> str:
    return " ".join(f"{verdict} {count}" for verdict, count in tally.most_common())
