"""Undo steps for a change made of several kernel operations (a plugin's ADD, a device move).

Each step that succeeds pushes its undo; if a later one fails, the undos run newest first
and the first error is the one that propagates. An undo that fails itself is reported on
stderr and the rest still run: leaving one thing behind is better than leaving all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Undo:
    """Undo steps, run newest first by :meth:`run` (or when a ``with Undo()`` block fails).

    ``what`` says what a step undoes, for the report when it fails (``delete eth0 in
    /run/netns/x``). Leaving the ``with`` block normally forgets the steps.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Record ``fn(*args, **kwargs)`` as the undo of something just done."""
        self._steps.append((what, lambda: fn(*args, **kwargs)))

    def run(self) -> None:
        """Undo everything recorded, newest first."""
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # keep undoing: the original error is the one to report
                print(f"pycni: rollback: failed to {what}: {exc}", file=sys.stderr)

    def clear(self) -> None:
        """The change is complete: forget the undo steps."""
        self._steps.clear()

    def __enter__(self) -> Undo:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.clear()
        else:
            self.run()
