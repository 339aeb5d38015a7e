"""Ranges and range sets: defaults, validation and the round-robin walk."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.ipam import Range, RangeSet, ip_name, parse_range_sets
from pycni.spec import InvalidNetworkConfig


def rng(**kw: Any) -> Range:
    return Range.from_json(kw, "r")


def test_defaults_v4() -> None:
    r = rng(subnet="10.1.0.0/24")
    assert (str(r.start), str(r.end), str(r.gateway)) == ("10.1.0.1", "10.1.0.254", "10.1.0.1")
    assert r.size() == 253  # .2 - .254


def test_defaults_v6_keep_last_address() -> None:
    r = rng(subnet="2001:db8::/120")
    assert (str(r.start), str(r.end), str(r.gateway)) == ("2001:db8::1", "2001:db8::ff",
                                                          "2001:db8::1")


def test_explicit_window_never_includes_network_broadcast_gateway() -> None:
    r = rng(subnet="10.1.0.0/30", rangeStart="10.1.0.0", rangeEnd="10.1.0.3")
    assert [ip for _, ip in RangeSet((r,)).walk()] == [int(ipaddress.ip_address("10.1.0.2"))]


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({}, "r.subnet"),
        ({"subnet": 5}, "r.subnet"),
        ({"subnet": "10.1.0.0"}, "r.subnet"),
        ({"subnet": "10.1.0.5/24"}, "host bits"),
        ({"subnet": "10.1.0.0/31"}, "too small"),
        ({"subnet": "2001:db8::/127"}, "too small"),
        ({"subnet": "nonsense/24"}, "r.subnet"),
        ({"subnet": "::ffff:10.0.0.0/120"}, "IPv4-mapped"),
        ({"subnet": "10.1.0.0/24", "gateway": "2001:db8::1"}, "r.gateway"),
        ({"subnet": "10.1.0.0/24", "gateway": 7}, "r.gateway"),
        ({"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}, "r.rangeStart"),
        ({"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.1"}, "r.rangeEnd"),
        ({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9", "rangeEnd": "10.1.0.3"}, "after"),
        ({"subnet": "10.1.0.0/24", "rangeStart": "010.1.0.9"}, "r.rangeStart"),
    ],
)
def test_bad_range_names_the_field(obj: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidNetworkConfig, match=needle):
        Range.from_json(obj, "r")


@pytest.mark.parametrize(
    ("ranges", "needle"),
    [
        ("x", "expected a list"),
        ([[]], "empty range set"),
        (["x"], r"ranges\[0\]"),
        ([[{"subnet": "10.1.0.0/24"}, {"subnet": "2001:db8::/64"}]], "mixed"),
        ([[{"subnet": "10.1.0.0/16"}, {"subnet": "10.1.2.0/24"}]], "overlap"),
        ([[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]], "range set 0"),
    ],
)
def test_bad_range_sets(ranges: Any, needle: str) -> None:
    with pytest.raises(InvalidNetworkConfig, match=needle):
        parse_range_sets(ranges, "ranges")


def test_disjoint_windows_in_one_subnet_are_fine() -> None:
    sets = parse_range_sets(
        [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.100"}],
         [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.101"}]], "ranges")
    assert len(sets) == 2


def test_ip_name_matches_go_forms() -> None:
    assert ip_name(4, int(ipaddress.ip_address("10.0.1.2"))) == "10.0.1.2"
    for text in ("2001:db8::1", "2001:db8:0:1:0:0:0:1", "::1", "1:0:0:1:0:0:0:1", "fe80::"):
        value = int(ipaddress.ip_address(text))
        # Go prints the first longest run of >= 2 zero groups as "::".
        assert ip_name(6, value) == str(ipaddress.ip_address(text))
    assert ip_name(6, int(ipaddress.ip_address("2001:db8:0:1:0:0:0:1"))) == "2001:db8:0:1::1"
    assert ip_name(6, int(ipaddress.ip_address("1:0:0:1:0:0:0:1"))) == "1:0:0:1::1"
    assert ip_name(6, int(ipaddress.ip_address("1:0:1:1:1:1:1:1"))) == "1:0:1:1:1:1:1:1"


def _set(*windows: tuple[int, int]) -> RangeSet:
    """Ranges in 10.<i>.0.0/24 with windows (.start, .end)."""
    return RangeSet(tuple(rng(subnet=f"10.{i}.0.0/24", rangeStart=f"10.{i}.0.{a}",
                              rangeEnd=f"10.{i}.0.{b}") for i, (a, b) in enumerate(windows)))


windows = st.lists(st.tuples(st.integers(1, 254), st.integers(1, 254)).map(sorted).map(tuple),
                   min_size=1, max_size=4)


@given(windows, st.data())
def test_walk_is_a_rotation_of_all_allocatable_addresses(ws: list[tuple[int, int]],
                                                         data: st.DataObject) -> None:
    rs = _set(*ws)
    window = [n for r in rs.ranges for n in range(int(r.start), int(r.end) + 1)]
    blocked = {n for r in rs.ranges for n in r.never_allocated()}
    after = None
    if data.draw(st.booleans()):
        after = ipaddress.IPv4Address(data.draw(st.sampled_from(window)))
    expected = window
    if after is not None:
        # Round-robin: start right after the last reservation and wrap around to it.
        i = window.index(int(after))
        expected = window[i + 1:] + window[:i + 1]
    seen = [n for _, n in rs.walk(after)]
    assert seen == [n for n in expected if n not in blocked]
    assert len(seen) == rs.size()


def test_walk_wraps_to_next_range_after_range_end() -> None:
    rs = _set((10, 12), (20, 21))
    after = ipaddress.IPv4Address("10.0.0.12")
    assert [ip_name(4, n) for _, n in rs.walk(after)] == [
        "10.1.0.20", "10.1.0.21", "10.0.0.10", "10.0.0.11", "10.0.0.12"]


def test_walk_from_unknown_last_starts_at_first_range() -> None:
    rs = _set((10, 11), (20, 20))
    assert next(ip_name(4, n) for _, n in rs.walk(ipaddress.IPv4Address("192.0.2.1"))) == \
        "10.0.0.10"
