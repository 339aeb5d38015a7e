"""What an allocator needs from where reservations live: the :class:`Store` Protocol.

:class:`~pycni.ipam.DiskStore` (host-local's files, shared with the reference plugin) is one
implementation; a cluster-wide store (a datastore every node's allocator shares) is meant to
be another. The allocator (:func:`~pycni.ipam.allocate`, :func:`~pycni.ipam.release`,
:func:`~pycni.ipam.exhausted`) and the host-local plugin see only this Protocol.

A store holds the reservations of one network. Callers hold :meth:`Store.locked` around every
read-modify-write; :meth:`Store.reserve` still refuses an address someone else holds, so a
writer that ignores the lock cannot take an address twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from ..spec import IPAddress
from ._store import Reservation


@runtime_checkable
class Store(Protocol):
    """The reservations of one network; failures are :class:`~pycni.spec.IOFailure`."""

    #: The network's name, for messages.
    network: str

    def locked(self, *, create: bool = True) -> AbstractContextManager[bool]:
        """Hold the network's lock; yields whether the store exists.

        ``create``: make the store if needed (ADD). Without it a missing store yields False
        and nothing is created: there is nothing to read or release (DEL, CHECK, GC).
        """
        ...

    def names(self) -> set[str]:
        """What is taken: ``str(ip)`` of every reserved address (other names may be there)."""
        ...

    def reservations(self, names: Iterable[str] | None = None) -> list[Reservation]:
        """Every reservation (of the addresses ``names``, default all)."""
        ...

    def owned(self, container_id: str, ifname: str, names: Iterable[str] | None = None
              ) -> list[Reservation]:
        """The reservations of (container ID, interface), exact or legacy ID-only."""
        ...

    def reserve(self, ip: IPAddress, container_id: str, ifname: str, range_id: int) -> bool:
        """Take ``ip`` for (container ID, interface) and make it range set ``range_id``'s
        last reserved address; False if it is taken."""
        ...

    def last_reserved(self, range_id: int) -> IPAddress | None:
        """The address last reserved from range set ``range_id`` (the round-robin cursor)."""
        ...

    def release(self, ip: IPAddress) -> bool:
        """Free ``ip``; False if it was not reserved."""
        ...

    def release_owner(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Free what (container ID, interface) holds (legacy ID-only reservations only when
        it holds no exact one); the freed addresses."""
        ...

    def gc(self, valid: set[tuple[str, str]]) -> list[IPAddress]:
        """Free every reservation whose (ID, interface) is not in ``valid``; the freed ones."""
        ...

    def writable(self) -> str:
        """Empty if reservations can be written, else the reason (for STATUS)."""
        ...
