"""Atomic file writes, shared by every place that keeps state on disk.

Write to a temporary file in the target's directory, fsync, set the mode, then rename over
the target: a reader (a runtime reading the result cache, a plugin being exec'd, a daemon
restarting) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                 dir_mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically; OSError on failure (nothing left behind).

    ``dir_mode``: create missing parent directories with this mode.
    """
    target = Path(path)
    if dir_mode is not None:
        target.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
