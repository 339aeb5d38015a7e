"""The agent's trace ring: the last calls it ran, in memory, served at ``/trace``.

:func:`pycni.invoke.run_in_process` hands each finished call's record (secrets already
redacted) to :meth:`TraceRing.append` once the agent installs the ring as the process's
trace sink. Each record gets a sequence number; ``/trace?since=N`` returns the records after
``N`` and the number to ask from next, which is how ``pycni trace --follow`` polls.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from ..invoke import MAX_RECORD, encode_record

#: Records the agent keeps (a record is at most :data:`pycni.invoke.MAX_RECORD` bytes, most
#: are 1-3 kB).
DEFAULT_RING = 2000
#: Records one ``/trace`` answer carries at most.
MAX_PAGE = 1000


class TraceRing:
    """A bounded, thread-safe ring of call records with sequence numbers."""

    def __init__(self, size: int = DEFAULT_RING) -> None:
        self._lock = threading.Lock()
        self._records: deque[tuple[int, bytes]] = deque(maxlen=size)
        self._seq = 0

    def append(self, record: dict[str, Any]) -> None:
        """Keep ``record`` (stored encoded: its size is bounded, and it is not mutable)."""
        line = encode_record(record)
        with self._lock:
            self._seq += 1
            self._records.append((self._seq, line))

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    @property
    def last(self) -> int:
        """The sequence number of the newest record (0 before any)."""
        with self._lock:
            return self._seq

    def since(self, seq: int = 0, limit: int = MAX_PAGE) -> tuple[list[dict[str, Any]], int]:
        """The (oldest first) records after ``seq``, at most ``limit``; and the last seq
        returned (to pass as ``seq`` next time)."""
        with self._lock:
            picked = [(s, line) for s, line in self._records if s > seq][:limit]
            last = picked[-1][0] if picked else max(seq, 0) if seq <= self._seq else self._seq
        records = []
        for s, line in picked:
            rec = json.loads(line)
            rec["seq"] = s
            records.append(rec)
        return records, last

    def answer(self, query: str) -> bytes:
        """The ``/trace`` body for a query string (``since``, ``limit``): JSON."""
        params = parse_qs(query)
        try:
            since = int(params.get("since", ["0"])[0])
            limit = min(MAX_PAGE, max(1, int(params.get("limit", [str(MAX_PAGE)])[0])))
        except ValueError as exc:
            raise ValueError("since and limit must be integers") from exc
        records, last = self.since(since, limit)
        return json.dumps({"records": records, "next": last, "max_record": MAX_RECORD},
                          separators=(",", ":")).encode()


__all__ = ["DEFAULT_RING", "MAX_PAGE", "TraceRing"]
