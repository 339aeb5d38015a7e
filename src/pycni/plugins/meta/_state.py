"""Per-attachment JSON records that meta plugins keep on disk (tuning backups, firewall GC).

A record is ``<directory>/<containerID>_<ifname>.json`` (the Go plugins' names), hashed by
:func:`pycni._files.fit_name` when a long container ID would make it exceed ``NAME_MAX``.
Writes go to a temporary file and are renamed into place, so a reader never sees half a
record.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ..._files import atomic_write, fit_name
from ...spec import DecodingFailure, IOFailure, decode_json

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
        """Write a record atomically; IOFailure names the file."""
        path = self.path(container_id, ifname)
        data = json.dumps(record, indent=1).encode()
        for attempt in range(_SAVE_ATTEMPTS):
            try:
                atomic_write(path, data, dir_mode=0o700)
            except FileNotFoundError as exc:
                # Another plugin's DEL or GC pruned the (then empty) directory after
                # atomic_write created it: create it again.
                if attempt + 1 < _SAVE_ATTEMPTS:
                    continue
                raise IOFailure(f"failed to write {path}: {exc.strerror}") from exc
            except OSError as exc:
                raise IOFailure(f"failed to write {path}: {exc.strerror}") from exc
            return

    @staticmethod
    def load(path: Path) -> dict[str, Any] | None:
        """A record, None if it does not exist, ``{}`` if it is unreadable."""
        try:
            data = decode_json(path.read_bytes(), f"state file {path}")
        except FileNotFoundError:
            return None
        except (OSError, DecodingFailure):
            return {}
        return data if isinstance(data, dict) else {}

    def records(self) -> list[Path]:
        """Every record file, sorted."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == ".json")
        except FileNotFoundError:
            return []

    @staticmethod
    def remove(path: Path) -> None:
        """Delete a record; a missing one is fine."""
        path.unlink(missing_ok=True)

    def prune(self) -> None:
        """Remove the directory if it holds nothing (not even a write in progress).

        rmdir(2) refuses a directory that is not empty, so a record (or the temporary file of
        a concurrent :meth:`save`) keeps it; a save that loses the race retries. Tidying is
        best effort: a directory that cannot be removed (permissions, a mount point) must not
        fail the DEL or GC that asked.
        """
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)  # noqa: PTH106 - rmdir(2) itself: atomic "only if empty"
