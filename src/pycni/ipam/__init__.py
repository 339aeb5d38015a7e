"""IP address management: ranges, the allocator, and where reservations live.

``host-local`` keeps its reservations in files that the Go reference plugin reads and writes
too (see :mod:`._store`); :func:`allocate` hands out one address per :class:`RangeSet`
round-robin, :func:`release` frees an attachment's addresses, :meth:`Store.gc` frees those
of attachments the runtime no longer knows. The allocator sees only the :class:`Store`
Protocol; :class:`DiskStore` is its host-local implementation.
"""

from ..spec import IPAddress
from ._allocator import Allocation, Request, allocate, assign_requests, exhausted, release
from ._fields import parse_routes
from ._range import (
    Range,
    RangeSet,
    canonical_ip,
    check_disjoint,
    ip_name,
    parse_address,
    parse_interface,
    parse_range_sets,
)
from ._resolv import parse_resolv_conf
from ._store import (
    DEFAULT_DATA_DIR,
    LAST_RESERVED_PREFIX,
    LINE_BREAK,
    LOCK_NAME,
    DiskStore,
    Reservation,
    reservation_bytes,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._base import Store

__all__ = [
    "DEFAULT_DATA_DIR",
    "LAST_RESERVED_PREFIX",
    "LINE_BREAK",
    "LOCK_NAME",
    "Allocation",
    "DiskStore",
    "IPAddress",
    "Range",
    "RangeSet",
    "Request",
    "Reservation",
    "Store",
    "allocate",
    "assign_requests",
    "canonical_ip",
    "check_disjoint",
    "exhausted",
    "ip_name",
    "parse_address",
    "parse_interface",
    "parse_range_sets",
    "parse_resolv_conf",
    "parse_routes",
    "release",
    "reservation_bytes",
]


def __getattr__(name: str) -> object:
    # Store is a typing.Protocol: it loads typing (~10 ms of a plugin start), which the
    # host-local path does not otherwise need, so it is imported on first use (PEP 562).
    if name == "Store":
        from ._base import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
