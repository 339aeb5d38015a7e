"""Address ranges and range sets, the pools host-local allocates from.

A :class:`Range` is one subnet with an inclusive ``rangeStart``-``rangeEnd`` window and a
gateway; a :class:`RangeSet` is an ordered list of disjoint ranges of one family that together
yield *one* address per attachment. Defaults follow the reference allocator: the gateway is
the subnet's first host (``.1``), the window starts there too (the gateway is skipped while
iterating) and ends at the last address, less the IPv4 broadcast.

Beyond the reference, the network address, the IPv4 broadcast address and the gateway are
never handed out even when an explicit window includes them.

Addresses are handled as ``int`` while iterating: a nearly full /16 means tens of thousands
of candidates, and ``ipaddress`` objects cost a microsecond each to build.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Iterator, Sequence

from .._record import FrozenRecord, set_fields
from ..spec import InvalidNetworkConfig, IPAddress, IPInterface

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def canonical_ip(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (``::ffff:10.1.0.5``) is the IPv4 address, as Go's ``To4`` sees it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_address(value: Any, field: str, *, allow_prefix: bool = False) -> IPAddress:
    """A bare IP (or ``ip/len`` when ``allow_prefix``: the length is dropped); names ``field``."""
    if not isinstance(value, str) or not value:
        raise InvalidNetworkConfig(f'invalid "{field}": expected an IP address string, '
                                   f"got {value!r}")
    try:
        if allow_prefix and "/" in value:
            return canonical_ip(ipaddress.ip_interface(value).ip)
        return canonical_ip(ipaddress.ip_address(value))
    except ValueError as exc:
        raise InvalidNetworkConfig(f'invalid "{field}" {value!r}: {exc}') from exc


def ip_name(version: int, value: int) -> str:
    """The address as Go's ``net.IP.String`` prints it (also the reservation's file name)."""
    if version == 4:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    # Python and Go agree on RFC 5952 form: the first longest run of >= 2 zero groups is "::".
    return str(ipaddress.IPv6Address(value))


def _ip_of(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


class Range(FrozenRecord):
    """One subnet and its allocation window (both ends inclusive)."""

    __slots__ = ("end", "gateway", "start", "subnet")
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress

    def __init__(self, subnet: IPNetwork, start: IPAddress, end: IPAddress,
                 gateway: IPAddress) -> None:
        set_fields(self, subnet, start, end, gateway)

    @classmethod
    def from_json(cls, obj: Any, field: str) -> Range:
        """Parse and canonicalise one range; errors name ``field`` (``ipam.ranges[0][1]``)."""
        if not isinstance(obj, dict):
            raise InvalidNetworkConfig(f'invalid "{field}": expected an object with "subnet"')
        subnet = _parse_subnet(obj.get("subnet"), f"{field}.subnet")
        version = subnet.version
        first_host = subnet.network_address + 1
        gateway = first_host
        if obj.get("gateway") not in (None, ""):
            gateway = parse_address(obj["gateway"], f"{field}.gateway")
            if gateway.version != version:
                raise InvalidNetworkConfig(
                    f'invalid "{field}.gateway" {gateway}: subnet {subnet} is IPv{version}'
                )
        start = first_host
        if obj.get("rangeStart") not in (None, ""):
            start = parse_address(obj["rangeStart"], f"{field}.rangeStart")
            if start not in subnet:
                raise InvalidNetworkConfig(
                    f'invalid "{field}.rangeStart": {start} is not in subnet {subnet}'
                )
        end = subnet.broadcast_address - 1 if version == 4 else subnet.broadcast_address
        if obj.get("rangeEnd") not in (None, ""):
            end = parse_address(obj["rangeEnd"], f"{field}.rangeEnd")
            if end not in subnet:
                raise InvalidNetworkConfig(
                    f'invalid "{field}.rangeEnd": {end} is not in subnet {subnet}'
                )
        if int(start) > int(end):
            raise InvalidNetworkConfig(
                f'invalid "{field}": rangeStart {start} is after rangeEnd {end}'
            )
        return cls(subnet=subnet, start=start, end=end, gateway=gateway)

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.subnet.version

    def contains(self, ip: IPAddress) -> bool:
        """True when ``ip`` is inside the window (the gateway included, as in the reference)."""
        return ip.version == self.version and self.start <= ip <= self.end  # type: ignore[operator]

    def never_allocated(self) -> frozenset[int]:
        """Addresses in the subnet that are never handed out: network, broadcast, gateway."""
        out = {int(self.subnet.network_address), int(self.gateway)}
        if self.version == 4:
            out.add(int(self.subnet.broadcast_address))
        return frozenset(out)

    def candidates(self, first: int, last: int) -> Iterator[int]:
        """Allocatable addresses from ``first`` to ``last`` (ints, inclusive, in the window)."""
        skip = self.never_allocated()
        return (n for n in range(first, last + 1) if n not in skip)

    def size(self) -> int:
        """How many addresses the window can hand out."""
        lo, hi = int(self.start), int(self.end)
        return hi - lo + 1 - sum(1 for n in self.never_allocated() if lo <= n <= hi)

    def overlaps(self, other: Range) -> bool:
        """True when the two windows share an address."""
        return (self.version == other.version
                and int(self.start) <= int(other.end) and int(other.start) <= int(self.end))

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def parse_interface(value: Any, field: str, *, expected: str) -> IPInterface:
    """``ip/len`` (host bits kept) from config field ``field``; InvalidNetworkConfig names it
    and says what was ``expected`` (``"a CIDR such as 10.1.0.0/24"``)."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidNetworkConfig(f'invalid "{field}": expected {expected}, got {value!r}')
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise InvalidNetworkConfig(f'invalid "{field}" {value!r}: {exc}') from exc


def _parse_subnet(value: Any, field: str) -> IPNetwork:
    iface = parse_interface(value, field, expected="a CIDR such as 10.1.0.0/24")
    if isinstance(iface, ipaddress.IPv6Interface) and iface.ip.ipv4_mapped is not None:
        raise InvalidNetworkConfig(f'invalid "{field}" {value!r}: an IPv4-mapped IPv6 subnet; '
                                   "write the IPv4 subnet instead")
    subnet = iface.network
    if iface.ip != subnet.network_address:
        raise InvalidNetworkConfig(
            f'invalid "{field}" {value!r}: host bits are set; for /{subnet.prefixlen} the '
            f"network address is {subnet.network_address}"
        )
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise InvalidNetworkConfig(f'invalid "{field}": network {subnet} is too small to '
                                   f"allocate from (at most /{subnet.max_prefixlen - 2})")
    return subnet


class RangeSet(FrozenRecord):
    """Disjoint ranges of one family; an attachment gets one address from the set."""

    __slots__ = ("ranges",)
    ranges: tuple[Range, ...]

    def __init__(self, ranges: tuple[Range, ...]) -> None:
        set_fields(self, ranges)

    @classmethod
    def from_json(cls, obj: Any, field: str) -> RangeSet:
        """Parse ``[{range}, ...]``; rejects an empty set, mixed families and overlaps."""
        if not isinstance(obj, list):
            raise InvalidNetworkConfig(f'invalid "{field}": expected a list of range objects')
        if not obj:
            raise InvalidNetworkConfig(f'invalid "{field}": empty range set')
        ranges = tuple(Range.from_json(r, f"{field}[{i}]") for i, r in enumerate(obj))
        for i, r in enumerate(ranges):
            if r.version != ranges[0].version:
                raise InvalidNetworkConfig(f'invalid "{field}[{i}]": mixed address families '
                                           f"in one range set ({ranges[0].subnet} and {r.subnet})")
            for j, other in enumerate(ranges[:i]):
                if r.overlaps(other):
                    raise InvalidNetworkConfig(
                        f'invalid "{field}": ranges {j} ({other}) and {i} ({r}) overlap'
                    )
        return cls(ranges)

    @property
    def version(self) -> int:
        """The family of every range in the set."""
        return self.ranges[0].version

    def range_for(self, ip: IPAddress) -> Range | None:
        """The range whose window holds ``ip``."""
        return next((r for r in self.ranges if r.contains(ip)), None)

    def contains(self, ip: IPAddress) -> bool:
        """True when some range's window holds ``ip``."""
        return self.range_for(ip) is not None

    def overlaps(self, other: RangeSet) -> bool:
        """True when any range of one overlaps any range of the other."""
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def size(self) -> int:
        """How many addresses the set can hand out."""
        return sum(r.size() for r in self.ranges)

    def walk(self, after: IPAddress | None = None) -> Iterator[tuple[Range, int]]:
        """Every allocatable address once, round-robin like the reference allocator.

        With ``after`` inside the set (the last reserved address), start just after it,
        run to the end of its range, continue with the following ranges and wrap around
        to finish at ``after`` itself; otherwise start at the first range's start.
        """
        index, pos = 0, int(self.ranges[0].start)
        if after is not None:
            for i, r in enumerate(self.ranges):
                if r.contains(after):
                    index, pos = i, int(after) + 1
                    if int(after) == int(r.end):
                        index, pos = (i + 1) % len(self.ranges), -1
                    break
        count = len(self.ranges)
        head = self.ranges[index]
        first = int(head.start) if pos < 0 else pos
        yield from ((head, n) for n in head.candidates(first, int(head.end)))
        for k in range(1, count):
            r = self.ranges[(index + k) % count]
            yield from ((r, n) for n in r.candidates(int(r.start), int(r.end)))
        if first > int(head.start):
            yield from ((head, n) for n in head.candidates(int(head.start), first - 1))

    def first_free(self, taken: Container[str], after: IPAddress | None = None
                   ) -> tuple[Range, IPAddress] | None:
        """The first address of :meth:`walk` whose name is not in ``taken``."""
        version = self.version
        for r, n in self.walk(after):
            if ip_name(version, n) not in taken:
                return r, _ip_of(version, n)
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def parse_range_sets(obj: Any, field: str) -> tuple[RangeSet, ...]:
    """Parse a ``ranges`` list of range sets; range sets must not overlap each other."""
    if not isinstance(obj, list):
        raise InvalidNetworkConfig(f'invalid "{field}": expected a list of range sets '
                                   "(a list of lists of range objects)")
    sets = tuple(RangeSet.from_json(s, f"{field}[{i}]") for i, s in enumerate(obj))
    check_disjoint(sets, field)
    return sets


def check_disjoint(sets: Sequence[RangeSet], field: str) -> None:
    """InvalidNetworkConfig naming the first two range sets that overlap."""
    for i, a in enumerate(sets):
        for j in range(i + 1, len(sets)):
            if a.overlaps(sets[j]):
                raise InvalidNetworkConfig(
                    f'invalid "{field}": range set {i} ({a}) overlaps with range set {j} '
                    f"({sets[j]})"
                )
