"""Allocator properties: unique, in range, never reserved addresses, exhaustion, requests."""

from __future__ import annotations

import ipaddress
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni.ipam import (
    DiskStore,
    RangeSet,
    Request,
    Reservation,
    Store,
    allocate,
    exhausted,
    parse_range_sets,
    release,
)
from pycni.spec import AddressExhausted, AddressInUse, InvalidNetworkConfig

IP = ipaddress.ip_address

#: Two small range sets: an IPv4 one over two subnets (with explicit windows that include
#: network, gateway and broadcast) and an IPv6 one.
SETS = parse_range_sets([
    [{"subnet": "10.1.0.0/29", "rangeStart": "10.1.0.0", "rangeEnd": "10.1.0.7"},
     {"subnet": "10.2.0.0/30", "gateway": "10.2.0.2"}],
    [{"subnet": "2001:db8::/125"}],
], "ranges")


def ls(path: Path) -> list[str]:
    """The names in a directory, sorted."""
    return sorted(p.name for p in Path(path).iterdir())


GATEWAYS = {"10.1.0.1", "10.2.0.2"}


def _allocatable(rs: RangeSet) -> set[str]:
    return {str(ipaddress.ip_address(n)) for _, n in rs.walk()}


def test_allocatable_excludes_network_gateway_broadcast() -> None:
    assert _allocatable(SETS[0]) == {"10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5",
                                     "10.1.0.6", "10.2.0.1"}
    assert _allocatable(SETS[1]) == {f"2001:db8::{i}" for i in range(2, 8)}


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 9)),
    st.tuples(st.just("del"), st.integers(0, 9)),
    st.tuples(st.just("ask"), st.integers(0, 9), st.sampled_from(
        ["10.1.0.0", "10.1.0.1", "10.1.0.4", "10.1.0.7", "10.2.0.1", "10.2.0.2", "10.9.9.9"])),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_allocator_invariants(steps: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = DiskStore("net", tmp)
        held: dict[int, list[str]] = {}
        for step in steps:
            kind, who = step[0], int(step[1])  # type: ignore[call-overload]
            cid = f"c{who}"
            if kind == "del":
                release(store, cid, "eth0")
                held.pop(who, None)
                continue
            requests = [Request(IP(str(step[2])), "test")] if kind == "ask" else []
            taken = {ip for ips in held.values() for ip in ips}
            try:
                got = allocate(store, SETS, container_id=cid, ifname="eth0", requests=requests)
            except AddressExhausted:
                # Only when some range set really has nothing left (or a dup was refused).
                assert any(_allocatable(rs) <= taken for rs in SETS)
                continue
            except AddressInUse:
                assert who in held or (requests and str(requests[0].ip) in taken | GATEWAYS)
                continue
            except InvalidNetworkConfig:
                assert requests
                assert str(requests[0].ip) not in _allocatable(SETS[0])
                continue
            assert who not in held
            ips = [str(a.ip) for a in got]
            held[who] = ips
            for rs, ip in zip(SETS, ips, strict=True):
                assert ip in _allocatable(rs)
                assert ip not in taken
            if requests:
                assert ips[0] == str(requests[0].ip)
        on_disk = sorted(n for n in store.names() if n[0].isdigit())
        assert on_disk == sorted(ip for ips in held.values() for ip in ips)
        assert len(on_disk) == len(set(on_disk))


def test_exhaustion_and_release(tmp_path: Path) -> None:
    store = DiskStore("net", str(tmp_path))
    for i in range(6):
        allocate(store, SETS, container_id=f"c{i}", ifname="eth0")
    assert exhausted(store, SETS) == [0, 1]
    with pytest.raises(AddressExhausted, match=r"range set 0 \(10\.1\.0\.0-10\.1\.0\.7"):
        allocate(store, SETS, container_id="late", ifname="eth0")
    release(store, "c3", "eth0")
    assert exhausted(store, SETS) == []
    got = allocate(store, SETS, container_id="late", ifname="eth0")
    assert len(got) == 2


def test_round_robin_continues_after_last_reserved(tmp_path: Path) -> None:
    store = DiskStore("net", str(tmp_path))
    first = allocate(store, SETS, container_id="a", ifname="eth0")
    release(store, "a", "eth0")
    second = allocate(store, SETS, container_id="b", ifname="eth0")
    # The freed address is not handed out again until the pool wraps.
    assert [str(a.ip) for a in first] == ["10.1.0.2", "2001:db8::2"]
    assert [str(a.ip) for a in second] == ["10.1.0.3", "2001:db8::3"]


def test_failed_second_set_undoes_the_first(tmp_path: Path) -> None:
    store = DiskStore("net", str(tmp_path))
    for i in range(6):
        allocate(store, SETS[1:], container_id=f"v6-{i}", ifname="eth0")
    before = ls(store.path)
    with pytest.raises(AddressExhausted, match="range set 1"):
        allocate(store, SETS, container_id="x", ifname="eth0")
    assert ls(store.path) == before


def test_duplicate_add_is_refused(tmp_path: Path) -> None:
    store = DiskStore("net", str(tmp_path))
    allocate(store, SETS, container_id="a", ifname="eth0")
    with pytest.raises(AddressInUse, match="duplicate"):
        allocate(store, SETS, container_id="a", ifname="eth0")
    # Another interface of the same container is another attachment.
    assert len(allocate(store, SETS, container_id="a", ifname="eth1")) == 2


def test_requested_address_taken_names_the_holder(tmp_path: Path) -> None:
    store = DiskStore("net", str(tmp_path))
    allocate(store, SETS, container_id="a", ifname="eth0",
             requests=[Request(IP("10.1.0.5"), "runtimeConfig.ips[0]")])
    with pytest.raises(AddressInUse, match=r"10\.1\.0\.5 \(args\.cni\.ips\[0\]\).*'a'"):
        allocate(store, SETS, container_id="b", ifname="eth0",
                 requests=[Request(IP("10.1.0.5"), "args.cni.ips[0]")])


def test_two_requests_for_one_set_fail_before_touching_disk(tmp_path: Path) -> None:
    store = DiskStore("net", str(tmp_path))
    with pytest.raises(InvalidNetworkConfig, match=r"10\.1\.0\.6 \(b\)"):
        allocate(store, SETS, container_id="a", ifname="eth0",
                 requests=[Request(IP("10.1.0.5"), "a"), Request(IP("10.1.0.6"), "b")])
    assert not store.path.exists()


def test_requesting_the_gateway_is_in_use(tmp_path: Path) -> None:
    store = DiskStore("net", str(tmp_path))
    with pytest.raises(AddressInUse, match="gateway"):
        allocate(store, SETS, container_id="a", ifname="eth0",
                 requests=[Request(IP("10.2.0.2"), "CNI_ARGS IP")])


class MemoryStore:
    """A :class:`Store` in a dict: what another (cluster-wide) store has to provide."""

    def __init__(self, network: str) -> None:
        self.network = network
        self.held: dict[str, tuple[str, str]] = {}
        self.cursor: dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self.locks = 0

    @contextmanager
    def locked(self, *, create: bool = True) -> Iterator[bool]:
        self.locks += 1
        yield bool(self.held) or create

    def names(self) -> set[str]:
        return set(self.held)

    def reservations(self, names: Iterable[str] | None = None) -> list[Reservation]:
        wanted = set(self.held) if names is None else set(names) & set(self.held)
        return [Reservation(IP(n), n, *self.held[n]) for n in sorted(wanted)]

    def owned(self, container_id: str, ifname: str, names: Iterable[str] | None = None
              ) -> list[Reservation]:
        return [r for r in self.reservations(names) if r.owned_by(container_id, ifname)]

    def reserve(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, container_id: str,
                ifname: str, range_id: int) -> bool:
        if str(ip) in self.held:
            return False
        self.held[str(ip)] = (container_id, ifname)
        self.cursor[range_id] = ip
        return True

    def last_reserved(self, range_id: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return self.cursor.get(range_id)

    def release(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return self.held.pop(str(ip), None) is not None

    def release_owner(self, container_id: str, ifname: str
                      ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [r.ip for r in self.owned(container_id, ifname) if self.release(r.ip)]

    def gc(self, valid: set[tuple[str, str]]
           ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [r.ip for r in self.reservations()
                if (r.container_id, r.ifname) not in valid and self.release(r.ip)]

    def writable(self) -> str:
        return ""


def test_the_allocator_needs_only_the_store_protocol() -> None:
    store: Store = MemoryStore("net")
    assert isinstance(store, Store)
    assert isinstance(DiskStore("net"), Store)
    first = allocate(store, SETS, container_id="a", ifname="eth0")
    assert [str(a.ip) for a in first] == ["10.1.0.2", "2001:db8::2"]
    release(store, "a", "eth0")
    second = allocate(store, SETS, container_id="b", ifname="eth0")
    assert [str(a.ip) for a in second] == ["10.1.0.3", "2001:db8::3"]
    with pytest.raises(AddressInUse, match="duplicate"):
        allocate(store, SETS, container_id="b", ifname="eth0")
    assert exhausted(store, SETS) == []
