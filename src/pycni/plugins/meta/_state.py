"""Per-attachment JSON records that meta plugins keep on disk (tuning backups, firewall GC).

A record is ``<directory>/<containerID>_<ifname>.json``; writes go to a temporary file and
are renamed into place, so a reader never sees half a record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..._files import atomic_write
from ...spec import DecodingFailure, IOFailure, decode_json


class RecordStore:
    """JSON records in one directory, keyed by container id and interface name."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def path(self, container_id: str, ifname: str) -> Path:
        """Where the record of one attachment lives."""
        return self.directory / f"{container_id}_{ifname}.json"

    def save(self, container_id: str, ifname: str, record: dict[str, Any]) -> None:
        """Write a record atomically; IOFailure names the file."""
        path = self.path(container_id, ifname)
        try:
            atomic_write(path, json.dumps(record, indent=1).encode(), dir_mode=0o700)
        except OSError as exc:
            raise IOFailure(f"failed to write {path}: {exc.strerror}") from exc

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
