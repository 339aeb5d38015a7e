"""host-local allocation: one address from each range set, under the store's lock.

The allocator works on any :class:`~pycni.ipam.Store`; host-local's is the disk store.

The strategy is the reference allocator's round-robin: each range set remembers the address
it handed out last (``last_reserved_ip.<index>``) and the next search starts just after it,
so a crash-looping container does not get its old address back until the pool wraps.

One ``listdir`` gives the taken addresses as a set of names; candidates are checked against
it in memory, so a nearly full /16 costs no per-candidate ``stat`` or failed ``open``. The
exclusive create that follows still guards against writers that ignore the lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from .._record import FrozenRecord, Record, set_fields
from ..spec import AddressExhausted, AddressInUse, InvalidNetworkConfig, IPAddress
from ._range import Range, RangeSet
from ._store import Reservation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._base import Store


class Request(FrozenRecord):
    """An address the runtime asked for, and the field it came from (for messages)."""

    __slots__ = ("ip", "source")
    ip: IPAddress
    source: str

    def __init__(self, ip: IPAddress, source: str) -> None:
        set_fields(self, ip, source)


class Allocation(FrozenRecord):
    """An address reserved from range set ``index``."""

    __slots__ = ("index", "ip", "range")
    ip: IPAddress
    range: Range
    index: int

    def __init__(self, ip: IPAddress, range: Range, index: int) -> None:  # noqa: A002
        set_fields(self, ip, range, index)

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address with its subnet's prefix length, as the result carries it."""
        return ipaddress.ip_interface(f"{self.ip}/{self.range.subnet.prefixlen}")


def assign_requests(sets: Sequence[RangeSet], requests: Sequence[Request]
                    ) -> list[tuple[Request, Range] | None]:
    """Give each range set the first requested address inside it.

    Every request must land in a distinct range set, and never on an address that is not
    allocatable (the gateway is "in use" by the gateway).
    """
    pending: list[Request] = []
    for req in requests:
        if all(req.ip != p.ip for p in pending):
            pending.append(req)
    out: list[tuple[Request, Range] | None] = []
    for rs in sets:
        found = next(((p, r) for p in pending if (r := rs.range_for(p.ip)) is not None), None)
        out.append(found)
        if found is not None:
            req, r = found
            pending.remove(req)
            if req.ip == r.gateway:
                raise AddressInUse(f"requested address {req.ip} ({req.source}) is the gateway "
                                   f"of subnet {r.subnet}")
            if int(req.ip) in r.never_allocated():
                raise InvalidNetworkConfig(f'invalid "{req.source}": {req.ip} is the network or '
                                           f"broadcast address of subnet {r.subnet}")
    if pending:
        extra = ", ".join(f"{p.ip} ({p.source})" for p in pending)
        raise InvalidNetworkConfig(
            f"requested addresses {extra} are not in any range set, or another requested "
            f"address already takes their range set; range sets: "
            + "; ".join(f"{i}: {rs}" for i, rs in enumerate(sets))
        )
    return out


def _holder(res: Reservation | None) -> str:
    if res is None:
        return "another attachment"
    return f"container {res.container_id!r}" + (f" interface {res.ifname!r}" if res.ifname else "")


class _Claim(Record):
    """One ADD's work under the lock: what is taken, what it reserved so far."""

    __slots__ = ("container_id", "done", "ifname", "names", "network", "owned", "store")
    store: Store
    container_id: str
    ifname: str
    network: str
    names: set[str]
    owned: list[Reservation]
    done: list[Allocation]

    def __init__(self, store: Store, container_id: str, ifname: str, network: str, names: set[str],  # noqa: PLR0917
                 owned: list[Reservation], done: list[Allocation]) -> None:
        self.store = store
        self.container_id = container_id
        self.ifname = ifname
        self.network = network
        self.names = names
        self.owned = owned
        self.done = done

    def requested(self, index: int, req: Request, r: Range) -> None:
        if not self.store.reserve(req.ip, self.container_id, self.ifname, index):
            holder = _holder(next(iter(self.store.reservations([str(req.ip)])), None))
            raise AddressInUse(f"requested address {req.ip} ({req.source}) is already "
                               f"allocated to {holder} in network {self.network!r}")
        self.names.add(str(req.ip))
        self.done.append(Allocation(req.ip, r, index))

    def next_free(self, index: int, rs: RangeSet) -> None:
        dup = next((o for o in self.owned if rs.contains(o.ip)), None)
        if dup is not None:
            raise AddressInUse(
                f"{dup.ip} in range set {index} is already allocated to container "
                f"{self.container_id!r} interface {self.ifname!r}; duplicate allocation is "
                "not allowed (DEL the attachment first)"
            )
        last = self.store.last_reserved(index)
        while True:
            found = rs.first_free(self.names, last)
            if found is None:
                raise AddressExhausted(
                    f"no free address in range set {index} ({rs}) of network "
                    f"{self.network!r}", f"all {rs.size()} addresses are allocated"
                )
            r, ip = found
            self.names.add(str(ip))
            # Under the lock the create only fails if a writer ignored the lock; take the next.
            if self.store.reserve(ip, self.container_id, self.ifname, index):
                self.done.append(Allocation(ip, r, index))
                return

    def undo(self) -> None:
        for a in self.done:
            self.store.release(a.ip)


def allocate(store: Store, sets: Sequence[RangeSet], *, container_id: str, ifname: str,
             requests: Sequence[Request] = (), network: str = "") -> list[Allocation]:
    """Reserve one address per range set for (container, interface); all or nothing."""
    assigned = assign_requests(sets, requests)
    with store.locked():
        names = store.names()
        owned: list[Reservation] = []
        if any(wanted is None for wanted in assigned):
            owned = store.owned(container_id, ifname, names)
        claim = _Claim(store, container_id, ifname, network or store.network, names, owned, [])
        try:
            for index, (rs, wanted) in enumerate(zip(sets, assigned, strict=True)):
                if wanted is None:
                    claim.next_free(index, rs)
                else:
                    claim.requested(index, *wanted)
        except BaseException:
            claim.undo()
            raise
    return claim.done


def release(store: Store, container_id: str, ifname: str) -> list[IPAddress]:
    """DEL: release what (container, interface) holds in this network; idempotent."""
    with store.locked(create=False) as present:
        return store.release_owner(container_id, ifname) if present else []


def exhausted(store: Store, sets: Sequence[RangeSet]) -> list[int]:
    """Indexes of the range sets with no free address (from one snapshot, without the lock)."""
    names = store.names()
    return [i for i, rs in enumerate(sets) if rs.first_free(names) is None]
