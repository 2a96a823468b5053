"""Order-preserving parallel map over a stream, with a bounded number of items in flight.

`concurrent.futures.Executor.map` (Python < 3.14) submits the whole input up front, which
would hold every decoded image of a large dataset in memory at once; this keeps at most
`window` items queued, so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; let only the parent react, so it can cancel the
    # queued work and remove its partial files instead of workers dying mid-task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    return min(8, available_cpus())


def ordered_map(
    function: Callable[[T], R], items: Iterable[T], *, workers: int, window: int | None = None
) -> Iterator[R]:
    """Yield `function(item)` for every item, in input order.

    workers: 0 runs in this process (no pickling, best for small jobs and tests); N > 0
        uses N worker processes started with "spawn" (safe with pyarrow and tqdm threads
        in the parent, unlike fork).
    window: items submitted but not yet yielded; default 4 per worker.
    Exceptions raised by `function` propagate at the item that raised them.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        yield from map(function, items)
        return
    window = window or 4 * workers
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_interrupts
    )
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On early exit (error, Ctrl-C, consumer stopped) drop queued work instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)
