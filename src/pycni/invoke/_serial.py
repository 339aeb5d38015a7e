"""Per-key ordering: calls for one container run one after the other, in arrival order."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger("pycni.invoke")


class KeyedSerial:
    """Runs jobs with the same key one at a time, in submission order; None keys at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Callable[[], None]]] = {}

    def run(self, key: str | None, job: Callable[[], None]) -> None:
        """Run ``job`` now on this thread, or queue it behind the running job of ``key``.

        The thread that runs a key's first job also runs the jobs queued behind it.
        """
        if key is None:
            job()
            return
        with self._lock:
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._queues[key] = deque()
        stop: BaseException | None = None
        while True:
            try:
                job()
            except Exception:  # a job must not take the jobs queued behind it down
                log.exception("call job failed")
            except BaseException as exc:
                # SystemExit and the like end this thread, but only once the jobs queued
                # behind have run: a key left in the map would hold its later calls forever.
                stop = stop or exc
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    break
                job = queue.popleft()
        if stop is not None:
            raise stop
