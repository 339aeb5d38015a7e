"""Concurrent calls' kernel work as one transaction per burst (flat combining).

The agent runs many plugin calls at once in threads of one process. Some of their work
costs the kernel (or a tool) about as much for many objects as for one: a netfilter
transaction (for iptables an ``iptables-save`` and an ``iptables-restore``, for nftables one
commit, which waits for an RCU grace period when it deletes anything), or unregistering
links (one RCU barrier for a whole list). A :class:`Combiner` merges the work that piles up
while such a transaction runs:

* the first caller for a key finds nobody at work and runs its own operation at once (a lone
  call waits for nothing: there is no window to gather others);
* a caller that arrives while that runs queues its operation and sleeps;
* when the running transaction ends, the first queued caller becomes the leader and runs
  every queued operation as one batch, then hands over to whoever queued meanwhile.

Each caller gets its own outcome. A batch the kernel refuses is redone one operation at a
time (by the leader, so still one writer per key), and only the bad operation fails.

The same serves reads: callers that asked for the same listing while one ran share the one
listing the next leader makes, which starts after each of them asked (so none of them can
miss a change that was done before it asked).

A combiner can be paused (:meth:`Combiner.pause`): calls then queue even where nobody is at
work, and :meth:`Combiner.resume` hands each key's queue to its first caller as one batch. The
tests use it to build a burst of a known shape out of real calls; :meth:`Combiner.waiting`
says how many calls are queued.

The key always includes the calling thread's namespace (:func:`netns_key`): a leader's
child processes and sockets act on its own thread's namespace, so it may only run
operations from callers in the same one.

The module stays off a plugin process's import costs (the veth delete uses it): no
``typing`` or ``dataclasses`` at run time.
"""

from __future__ import annotations

import threading

from .._record import FrozenRecord, set_fields
from ..spec import KernelError
from .links import _netns_key as netns_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence
    from typing import Generic, TypeVar

    Op = TypeVar("Op")
    R = TypeVar("R")

    class _Typed(Generic[Op, R]):
        """What mypy sees: the classes below are generic in the operation and result."""
else:
    Op = R = None

    class _Typed:
        """At run time a subscript of the generic base is the base itself."""

        __slots__ = ()  # (else every subclass's instances get a __dict__)

        def __class_getitem__(cls, _params: object) -> type:
            return cls


class BurstCounters(FrozenRecord):
    """What a combiner did since the process started.

    ``calls`` operations were submitted and ran in ``transactions`` kernel transactions
    (batches and lone operations; fewer than ``calls`` when bursts were merged);
    ``batches`` of those carried more than one operation; ``fallbacks`` batches were refused
    and redone one operation at a time.
    """

    __slots__ = ("batches", "calls", "fallbacks", "transactions")
    calls: int
    transactions: int
    batches: int
    fallbacks: int

    def __init__(self, calls: int = 0, transactions: int = 0, batches: int = 0,
                 fallbacks: int = 0) -> None:
        set_fields(self, calls, transactions, batches, fallbacks)


#: Indices of Combiner._counts, in the order of BurstCounters' fields.
_CALLS, _TRANSACTIONS, _BATCHES, _FALLBACKS = range(4)


class _Slot(_Typed[Op, R]):
    """One queued operation: its outcome, and the batch it leads if it is handed the lead."""

    __slots__ = ("batch", "done", "op", "outcome")

    def __init__(self, op: Op) -> None:
        self.op = op
        self.done = threading.Event()
        self.outcome: R | BaseException | None = None
        self.batch: list[_Slot[Op, R]] | None = None


class Combiner(_Typed[Op, R]):
    """Runs operations per key, merging those that queue up while one runs.

    ``run_one(op)`` applies one operation alone and returns its result (raising its error).
    ``run_batch(ops)`` applies several as one transaction and returns each one's result or
    error, or raises :class:`KernelError` when the transaction as a whole is refused; then
    every operation goes through ``run_one``.
    """

    def __init__(self, run_one: Callable[[Op], R],
                 run_batch: Callable[[Sequence[Op]], list[R | BaseException]]) -> None:
        self._run_one = run_one
        self._run_batch = run_batch
        self._lock = threading.Lock()
        # A key is present while a leader works on it; its list is what queued meanwhile.
        self._queues: dict[Hashable, list[_Slot[Op, R]]] = {}
        self._counts = [0, 0, 0, 0]  # _CALLS, _TRANSACTIONS, _BATCHES, _FALLBACKS
        # While paused, the keys whose queue nobody leads yet (resume() hands them over).
        self._held: set[Hashable] | None = None

    def counters(self) -> BurstCounters:
        """A snapshot of this combiner's counters."""
        with self._lock:
            return BurstCounters(*self._counts)

    def pause(self) -> None:
        """From now on, calls for a key nobody is working on queue instead of running."""
        with self._lock:
            if self._held is None:
                self._held = set()

    def resume(self) -> None:
        """End a pause: each key's queued calls run as one batch, led by the first of them."""
        with self._lock:
            held, self._held = self._held or set(), None
            leaders = []
            for key in held:
                queued = self._queues[key]
                self._queues[key] = []
                queued[0].batch = queued
                leaders.append(queued[0])
        for leader in leaders:
            leader.done.set()

    def waiting(self) -> int:
        """How many calls are queued (behind a running transaction, or in a pause)."""
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())

    def run(self, key: Hashable, op: Op) -> R:
        """Apply ``op`` alone or in a batch with others of ``key``: its result, or its error."""
        slot: _Slot[Op, R] = _Slot(op)
        with self._lock:
            self._counts[_CALLS] += 1
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(slot)
            elif self._held is not None:
                self._queues[key] = [slot]
                self._held.add(key)
            else:
                self._queues[key] = []
                slot.batch = [slot]
        if slot.batch is None:
            slot.done.wait()
        if slot.batch is not None:  # ours to run: first here, or handed over
            self._lead(key, slot.batch)
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]  # R, set by _lead

    def _lead(self, key: Hashable, batch: list[_Slot[Op, R]]) -> None:
        outcomes: list[R | BaseException]
        try:
            outcomes = self._apply([s.op for s in batch])
        except BaseException as exc:  # a bug or KeyboardInterrupt: nobody may wait forever
            outcomes = [exc] * len(batch)
        with self._lock:
            queued = self._queues[key]
            if queued:
                self._queues[key] = []
                queued[0].batch = queued
            else:
                del self._queues[key]
        for slot, outcome in zip(batch, outcomes, strict=True):
            slot.outcome = outcome
            slot.batch = None
            slot.done.set()
        if queued:
            queued[0].done.set()

    def _apply(self, ops: list[Op]) -> list[R | BaseException]:
        with self._lock:
            self._counts[_TRANSACTIONS] += 1
            self._counts[_BATCHES] += len(ops) > 1
        if len(ops) > 1:
            try:
                return self._run_batch(ops)
            except KernelError:
                with self._lock:
                    self._counts[_FALLBACKS] += 1
                    self._counts[_TRANSACTIONS] += len(ops)
        return [self._one(op) for op in ops]

    def _one(self, op: Op) -> R | BaseException:
        try:
            return self._run_one(op)
        except Exception as exc:  # handed to the caller whose operation it was
            return exc


__all__ = ["BurstCounters", "Combiner", "netns_key"]
