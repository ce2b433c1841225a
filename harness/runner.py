"""Executing a plan: `jobs` tasks at a time, each record handed on as it finishes (to the store). The tasks
themselves (converting, running, judging) are harness.tasks'; the workers they use are harness.pool's."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

from harness.plan import Cell, Conversion
from harness.records import CellRecord, ConversionRecord, Outcome, Verdict

Item = TypeVar("Item", Conversion, Cell)
Result = TypeVar("Result", ConversionRecord, CellRecord)


class Runner:
    """Schedules tasks on `jobs` threads and hands on their records."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def execute(self, items: Iterable[Item], task: Callable[[Item], Result],
                on_record: Callable[[Result], None] = lambda record: None) -> None:
        """Run `task` over `items` on `jobs` threads, calling `on_record` with each record as it arrives.

        On an interrupt, pending items are dropped and in-flight ones are not handed on, so what was stored holds
        only cells that really finished; the caller closes the workers, which ends the cells in flight.
        """
        pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="cell")
        futures = [pool.submit(guarded, task, item) for item in items]
        try:
            for future in as_completed(futures):
                on_record(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def guarded(task: Callable[[Item], Result], item: Item) -> Result:
    """A bug in the harness fails its cell visibly (stage `harness`) instead of ending the run."""
    try:
        return task(item)
    except Exception:
        outcome = Outcome(verdict=Verdict.UNCLASSIFIED, stage="harness", reason="harness error",
                          log_excerpt=traceback.format_exc(limit=6)[-1500:])
        if isinstance(item, Conversion):
            return ConversionRecord(key=item.key, converter=item.converter, model=item.model, variant=item.variant,
                                    flags=list(item.flags), outcome=outcome)
        return CellRecord(key=item.key, converter=item.converter, runtime=item.runtime, model=item.model,
                          variant=item.variant, api=item.api, memory=item.memory, outcome=outcome)
