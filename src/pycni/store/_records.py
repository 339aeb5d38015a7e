"""Per-attachment JSON records that meta plugins keep on disk (tuning backups, firewall GC).

A record is ``<directory>/<containerID>_<ifname>.json`` (the Go plugins' names), hashed by
:func:`~pycni.store.fit_name` when a long container ID would make it exceed ``NAME_MAX``.
Writes go to a temporary file and are renamed into place, so a reader never sees half a
record.

This package sits below :mod:`pycni.spec`, so failures are ``OSError``: the plugin that
keeps the records turns them into its CNI error.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from .._json import loads
from ._files import atomic_write, fit_name

#: How often a write is retried when a concurrent :meth:`RecordStore.prune` removed the
#: directory between its creation and the write.
_SAVE_ATTEMPTS = 5


class RecordStore:
    """JSON records in one directory, keyed by container id and interface name."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def path(self, container_id: str, ifname: str) -> Path:
        """Where the record of one attachment lives."""
        return self.directory / fit_name(f"{container_id}_{ifname}", ".json")

    def save(self, container_id: str, ifname: str, record: dict[str, Any]) -> None:
        """Write a record atomically; the OSError names the record's file."""
        path = self.path(container_id, ifname)
        data = json.dumps(record, indent=1).encode()
        for attempt in range(_SAVE_ATTEMPTS):
            try:
                atomic_write(path, data, dir_mode=0o700)
            except OSError as exc:
                # FileNotFoundError: another plugin's DEL or GC pruned the (then empty)
                # directory after atomic_write created it: create it again.
                if isinstance(exc, FileNotFoundError) and attempt + 1 < _SAVE_ATTEMPTS:
                    continue
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            return

    @staticmethod
    def load(path: Path) -> dict[str, Any] | None:
        """A record, None if it does not exist, ``{}`` if it is unreadable."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            data = loads(raw)
        except ValueError:  # strict: NaN, Infinity and 1e999 make a record unreadable
            return {}
        return data if isinstance(data, dict) else {}

    def records(self) -> list[Path]:
        """Every record file, sorted."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == ".json")
        except (FileNotFoundError, NotADirectoryError):  # no directory: no records
            return []

    @staticmethod
    def remove(path: Path) -> None:
        """Delete a record; a missing one is fine (ENOTDIR too: its directory is a file)."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()

    def prune(self) -> None:
        """Remove the directory if it holds nothing (not even a write in progress).

        rmdir(2) refuses a directory that is not empty, so a record (or the temporary file of
        a concurrent :meth:`save`) keeps it; a save that loses the race retries. Tidying is
        best effort: a directory that cannot be removed (permissions, a mount point) must not
        fail the DEL or GC that asked.
        """
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)  # noqa: PTH106 - rmdir(2) itself: atomic "only if empty"
