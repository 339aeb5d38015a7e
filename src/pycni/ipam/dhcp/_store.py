"""The daemon's lease store: one JSON file per attachment, so a restarted daemon keeps going.

Files are named by a hash of the client identifier (which holds ``/``) and written through a
temporary file and a rename, so a crash leaves the old record or the new one, never half of
one. A record holds the attachment, the lease (with the ACK's bytes) and its state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ...spec import CNIError, IOFailure, decode_json_object
from ...store import atomic_write
from ._client import Lease
from ._keeper import Attachment, State

log = logging.getLogger("pycni.dhcp")

#: Where the daemon keeps its leases unless told otherwise.
DEFAULT_STATE_DIR = "/var/lib/cni/dhcp"


@dataclass(frozen=True)
class LeaseRecord:
    """One stored lease."""

    attachment: Attachment
    lease: Lease
    state: State


class LeaseStore:
    """Lease records in ``directory`` (created 0700: leases name pods and their addresses)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, client_id: str) -> Path:
        return self.directory / (hashlib.sha256(client_id.encode()).hexdigest()[:32] + ".json")

    def save(self, record: LeaseRecord) -> None:
        """Write (or replace) the record of ``record.attachment``."""
        data = json.dumps({"attachment": record.attachment.to_json(),
                           "lease": record.lease.to_json(), "state": str(record.state)},
                          indent=1).encode()
        try:
            atomic_write(self._path(record.attachment.client_id), data, dir_mode=0o700)
        except OSError as exc:
            raise IOFailure(f"cannot store the DHCP lease of {record.attachment.client_id}",
                            f"{exc.filename or self.directory}: {exc.strerror}") from exc

    def delete(self, client_id: str) -> None:
        """Forget a record; a missing one is fine."""
        try:
            self._path(client_id).unlink(missing_ok=True)
        except OSError as exc:
            raise IOFailure(f"cannot remove the DHCP lease record of {client_id}",
                            exc.strerror or "") from exc

    def load(self) -> list[LeaseRecord]:
        """Every readable record; damaged ones are logged and skipped."""
        records: list[LeaseRecord] = []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return records
        for path in paths:
            try:
                obj = decode_json_object(path.read_bytes(), f"lease record {path}")
                records.append(LeaseRecord(Attachment.from_json(obj["attachment"]),
                                           Lease.from_json(obj["lease"]), State(obj["state"])))
            except (OSError, ValueError, KeyError, TypeError, CNIError) as exc:
                log.warning("skipping damaged lease record %s: %s", path, exc)
        return records
