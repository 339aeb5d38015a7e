"""Atomic file writes, shared by every place that keeps state on disk.

Write to a temporary file in the target's directory, fsync, set the mode, then rename over
the target: a reader (a runtime reading the result cache, a plugin being exec'd, a daemon
restarting) sees the old file or the new one, never half of one.

Files keyed by a container ID go through :func:`fit_name`: the spec sets no limit on the ID's
length, but a file name holds at most ``NAME_MAX`` bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: The longest file name (in bytes) Linux file systems accept (``NAME_MAX``).
NAME_MAX = 255
#: Bytes of the original name a hashed name keeps, so an operator can still tell whose it is.
HASHED_PREFIX_BYTES = 128
#: Separates the kept prefix from the digest; container IDs and network names cannot hold it.
HASH_MARK = "~"


def _cut(text: str, size: int) -> str:
    """The longest prefix of ``text`` that is at most ``size`` bytes of UTF-8."""
    return text.encode()[:size].decode(errors="ignore")


def fit_name(name: str, suffix: str = "", *, limit: int = NAME_MAX) -> str:
    """``name + suffix`` as a file name, hashed if it would exceed ``limit`` bytes.

    A name that fits is kept as it is, so files of short container IDs stay where the Go
    plugins and libcni put them. A longer one becomes ``<first bytes of name>~<sha256 hex of
    the whole name><suffix>``, keeping at most 128 bytes of the name (fewer if ``limit``, by
    default ``NAME_MAX``, needs it): stable, so every later call (DEL, CHECK, GC, another
    process) finds the same name. Also used for other size-limited keys (rule comments).
    """
    if len((name + suffix).encode()) <= limit:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()
    keep = min(HASHED_PREFIX_BYTES, limit - len(HASH_MARK + digest + suffix))
    if keep < 0:
        raise ValueError(f"cannot fit a hashed name with suffix {suffix!r} in {limit} bytes")
    return _cut(name, keep) + HASH_MARK + digest + suffix


def is_hashed(name: str) -> bool:
    """True if ``name`` may be a :func:`fit_name` hash (its original is not in it)."""
    return HASH_MARK in name


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                 dir_mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically; OSError on failure (nothing left behind).

    ``dir_mode``: create missing parent directories with this mode.
    """
    target = Path(path)
    if dir_mode is not None:
        target.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    # mkstemp appends 6 random characters: cut the prefix so a NAME_MAX target still works.
    fd, tmp = tempfile.mkstemp(dir=target.parent,
                               prefix=f".{_cut(target.name, NAME_MAX - 16)}.")
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
