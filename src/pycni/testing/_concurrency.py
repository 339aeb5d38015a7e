"""Waiting and concurrency for tests: poll until kernel state settles, run calls from many
threads at once, and build a burst of a known shape in one of host's combiners."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it is truthy (kernel state settles asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def at_once(calls: Sequence[Callable[[], T]], *, timeout: float = 120.0
            ) -> list[T | Exception]:
    """Run each of ``calls`` in its own thread, all released together (as the agent runs
    concurrent plugin calls); each one's result, or the exception it raised.

    A call still running after ``timeout`` seconds fails the test (a hang is no result).
    """
    gate = threading.Barrier(len(calls))
    outcome: list[T | Exception | None] = [None] * len(calls)

    def run(k: int) -> None:
        gate.wait(timeout)
        try:
            outcome[k] = calls[k]()
        except Exception as exc:  # the caller compares outcomes
            outcome[k] = exc

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    if hung:
        raise AssertionError(f"{hung} of {len(calls)} calls still running after {timeout} s")
    return outcome  # type: ignore[return-value]  # every slot was set by its thread


class Pausable(Protocol):
    """What :func:`paused_burst` needs of a combiner (``pycni.host``'s burst combiners)."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def waiting(self) -> int: ...


def paused_burst(combiner: Pausable, calls: Sequence[Callable[[], T]], *,
                 timeout: float = 120.0) -> list[T | Exception]:
    """:func:`at_once`, with the first operation of every call queued in the paused
    ``combiner`` until all of them are there: the burst is then merged as a whole, which a
    free race between the threads does not always make (on a fast machine the calls can run
    one after the other). Each call must submit an operation to ``combiner``."""
    outcome: list[T | Exception] = []
    combiner.pause()
    try:
        runner = threading.Thread(
            target=lambda: outcome.extend(at_once(calls, timeout=timeout)), daemon=True)
        runner.start()
        if not wait_for(lambda: combiner.waiting() == len(calls), timeout=timeout):
            raise AssertionError(
                f"{combiner.waiting()} of {len(calls)} calls queued in the combiner")
    finally:
        combiner.resume()
    runner.join(timeout)
    if len(outcome) != len(calls):
        raise AssertionError("the burst did not end")
    return outcome
