"""Results of every spec version: conversion properties, exact key sets, hostile input."""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni._record import replace
from pycni.spec import (
    DNS,
    SUPPORTED_VERSIONS,
    DecodingFailure,
    IncompatibleCNIVersion,
    Interface,
    IPConfig,
    Result,
    Route,
    parse_cidr,
    parse_ip,
)

LEGACY = ("0.1.0", "0.2.0")
RICH_0X = ("0.3.0", "0.3.1", "0.4.0")

# --- strategies ----------------------------------------------------------------------------

v4_addr = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6_addr = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
v4_iface = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(ipaddress.IPv4Interface)
v6_iface = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
    ipaddress.IPv6Interface
)
small_int = st.integers(0, 2**31 - 1)
text = st.text(st.characters(codec="utf-8"), max_size=12)


def _ip_config(n_ifaces: int) -> st.SearchStrategy[IPConfig]:
    index = st.none() | st.integers(0, max(n_ifaces - 1, 0)) if n_ifaces else st.none()
    v4 = st.builds(IPConfig, address=v4_iface, gateway=st.none() | v4_addr, interface=index)
    v6 = st.builds(IPConfig, address=v6_iface, gateway=st.none() | v6_addr, interface=index)
    return v4 | v6


routes = st.one_of(
    st.builds(Route, dst=v4_iface, gw=st.none() | v4_addr),
    st.builds(Route, dst=v6_iface, gw=st.none() | v6_addr),
).flatmap(
    lambda r: st.builds(
        replace, st.just(r), mtu=small_int, advmss=small_int, priority=small_int,
        table=st.none() | small_int, scope=st.none() | st.integers(0, 255),
    )
)

interfaces = st.builds(
    Interface,
    name=st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True),
    mac=st.sampled_from(["", "0a:58:0a:01:00:05", "00:00:00:00:00:00"]),
    mtu=st.sampled_from([0, 1280, 1500, 9000]),
    sandbox=st.sampled_from(["", "/var/run/netns/pyt-c"]),
    socket_path=st.sampled_from(["", "/run/vhost/sock0"]),
    pci_id=st.sampled_from(["", "0000:03:00.1"]),
)

dns = st.builds(
    DNS,
    nameservers=st.lists(st.sampled_from(["10.0.0.10", "fd00::a", "1.1.1.1"]), max_size=3),
    domain=st.sampled_from(["", "cluster.local"]),
    search=st.lists(text, max_size=3),
    options=st.lists(st.sampled_from(["ndots:5", "edns0", "rotate"]), max_size=2),
)


@st.composite
def results(draw: st.DrawFn, version: str = "1.1.0") -> Result:
    ifaces = draw(st.lists(interfaces, max_size=3))
    return Result(
        cni_version=version,
        interfaces=ifaces,
        ips=draw(st.lists(_ip_config(len(ifaces)), max_size=5)),
        routes=draw(st.lists(routes, max_size=5)),
        dns=draw(dns),
    )


def without_1_1(result: Result, version: str) -> Result:
    """What a pre-1.1.0 version can carry of ``result``."""
    return Result(
        cni_version=version,
        interfaces=[replace(i, mtu=0, socket_path="", pci_id="") for i in result.interfaces],
        ips=copy.deepcopy(result.ips),
        routes=[Route(dst=r.dst, gw=r.gw) for r in result.routes],
        dns=copy.deepcopy(result.dns),
    )


def via_wire(result: Result, version: str) -> Result:
    """Write as ``version``, through real JSON text, and read back."""
    return Result.from_json(json.loads(json.dumps(result.to_json(version))))


# --- conversion properties -----------------------------------------------------------------


@given(results())
def test_1_1_0_round_trip_is_lossless(result: Result) -> None:
    assert via_wire(result, "1.1.0") == result


@given(results())
def test_1_0_0_round_trip_drops_only_1_1_fields(result: Result) -> None:
    assert via_wire(result, "1.0.0") == without_1_1(result, "1.0.0")
    # and 1.0.0 read back, written as 1.1.0, is read unchanged
    back = via_wire(result, "1.0.0")
    assert via_wire(back, "1.1.0") == replace(back, cni_version="1.1.0")


@pytest.mark.parametrize("version", RICH_0X)
@given(result=results())
def test_0_3_and_0_4_round_trip_like_1_0_0(version: str, result: Result) -> None:
    assert via_wire(result, version) == without_1_1(result, version)
    old = result.to_json(version)
    new = result.to_json("1.0.0")
    # the only differences from 1.0.0: cniVersion and each IP's "version"
    for ip in old.get("ips", []):
        assert ip.pop("version") == str(ipaddress.ip_interface(ip["address"]).version)
    old["cniVersion"] = "1.0.0"
    assert old == new
    # 0.x -> 1.0.0 -> 0.x is the identity on what 0.x can carry
    up = Result.from_json(new)
    assert up.to_json(version) == result.to_json(version)


@pytest.mark.parametrize("version", LEGACY)
@given(result=results())
def test_legacy_keeps_first_address_per_family_and_routes_by_family(
    version: str, result: Result
) -> None:
    first4 = next((ip for ip in result.ips if ip.family == 4), None)
    first6 = next((ip for ip in result.ips if ip.family == 6), None)
    if first4 is None and first6 is None:
        with pytest.raises(IncompatibleCNIVersion):
            result.to_json(version)
        return
    out = result.to_json(version)
    assert set(out) <= {"cniVersion", "ip4", "ip6", "dns"}
    for key, first in (("ip4", first4), ("ip6", first6)):
        assert (key in out) == (first is not None)
    back = via_wire(result, version)
    kept = [ip for ip in (first4, first6) if ip is not None]
    assert back.ips == [IPConfig(address=ip.address, gateway=ip.gateway) for ip in kept]
    families = {ip.family for ip in kept}
    expected_routes = [
        Route(dst=r.dst, gw=r.gw)
        for family in (4, 6)
        if family in families
        for r in result.routes
        if r.dst.version == family
    ]
    assert back.routes == expected_routes
    assert back.interfaces == []
    assert back.dns == result.dns


@given(results())
def test_convert_is_idempotent(result: Result) -> None:
    for version in SUPPORTED_VERSIONS:
        try:
            once = result.convert(version)
        except IncompatibleCNIVersion:
            assert version in LEGACY
            assert not result.ips
            continue
        assert once.convert(version) == once
        assert once.cni_version == version


# --- exact key sets ------------------------------------------------------------------------

TOP_KEYS = {
    "0.1.0": {"cniVersion", "ip4", "ip6", "dns"},
    "0.2.0": {"cniVersion", "ip4", "ip6", "dns"},
    **{v: {"cniVersion", "interfaces", "ips", "routes", "dns"} for v in ("0.3.0", "0.3.1",
                                                                      "0.4.0", "1.0.0", "1.1.0")},
}
IFACE_KEYS = {"name", "mac", "sandbox"}
IFACE_KEYS_1_1 = IFACE_KEYS | {"mtu", "socketPath", "pciID"}
ROUTE_KEYS = {"dst", "gw"}
ROUTE_KEYS_1_1 = ROUTE_KEYS | {"mtu", "advmss", "priority", "table", "scope"}
DNS_KEYS = {"nameservers", "domain", "search", "options"}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@given(result=results())
def test_to_json_has_exactly_the_keys_the_version_allows(version: str, result: Result) -> None:
    if version in LEGACY and not result.ips:
        return
    out = result.to_json(version)
    is_1_1 = version == "1.1.0"
    assert out["cniVersion"] == version
    assert set(out) <= TOP_KEYS[version]
    assert "dns" in out  # libcni always prints it, even empty
    assert set(out["dns"]) <= DNS_KEYS
    route_keys = ROUTE_KEYS_1_1 if is_1_1 else ROUTE_KEYS
    if version in LEGACY:
        for key in ("ip4", "ip6"):
            if key in out:
                assert set(out[key]) <= {"ip", "gateway", "routes"}
                assert "ip" in out[key]
                for r in out[key].get("routes", []):
                    assert set(r) <= ROUTE_KEYS
        return
    for iface in out.get("interfaces", []):
        assert set(iface) <= (IFACE_KEYS_1_1 if is_1_1 else IFACE_KEYS)
        assert "name" in iface
    for ip in out.get("ips", []):
        allowed = {"address", "gateway", "interface"}
        if version in RICH_0X:
            assert ip["version"] in ("4", "6")
            allowed.add("version")
        assert set(ip) <= allowed
        assert "address" in ip
    for r in out.get("routes", []):
        assert set(r) <= route_keys
        assert "dst" in r
    # empty lists are left out, as Go's omitempty does
    for key in ("interfaces", "ips", "routes"):
        assert out.get(key, [None]) != []


def test_1_1_fields_written_only_for_1_1() -> None:
    result = Result(
        interfaces=[Interface(name="eth0", mtu=1400, socket_path="/s", pci_id="0000:00:01.0")],
        ips=[IPConfig(address=ipaddress.ip_interface("10.1.0.5/24"), interface=0)],
        routes=[Route(dst=ipaddress.ip_interface("0.0.0.0/0"), gw=ipaddress.ip_address("10.1.0.1"),
                      mtu=1400, advmss=1360, priority=10, table=100, scope=0)],
    )
    new = result.to_json("1.1.0")
    assert new["interfaces"] == [{"name": "eth0", "mtu": 1400, "socketPath": "/s",
                                  "pciID": "0000:00:01.0"}]
    assert new["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400, "advmss": 1360,
                              "priority": 10, "table": 100, "scope": 0}]
    old = result.to_json("1.0.0")
    assert old["interfaces"] == [{"name": "eth0"}]
    assert old["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
    assert old["ips"] == [{"interface": 0, "address": "10.1.0.5/24"}]
    assert result.to_json("0.4.0")["ips"] == [
        {"version": "4", "interface": 0, "address": "10.1.0.5/24"}
    ]


def test_addresses_keep_host_bits() -> None:
    text_ = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                                            {"address": "fd00::5/64"}],
             "routes": [{"dst": "10.2.0.9/16"}]}
    result = Result.from_json(text_)
    assert str(result.ips[0].address) == "10.1.0.5/24"
    assert result.to_json()["ips"][1] == {"address": "fd00::5/64"}
    assert result.to_json()["routes"] == [{"dst": "10.2.0.9/16"}]


def test_legacy_reads_ip4_and_ip6_with_routes() -> None:
    result = Result.from_json({
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1",
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]},
        "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "::/0"}]},
        "dns": {"nameservers": ["10.0.0.10"]},
    })
    assert [str(ip.address) for ip in result.ips] == ["10.1.0.5/24", "fd00::5/64"]
    assert [str(r.dst) for r in result.routes] == ["0.0.0.0/0", "::/0"]
    assert result.to_json("1.0.0")["ips"][0] == {"address": "10.1.0.5/24", "gateway": "10.1.0.1"}


def test_missing_cni_version_reads_as_0_1_0() -> None:
    result = Result.from_json({"ip4": {"ip": "10.1.0.5/24"}})
    assert result.cni_version == "0.1.0"


def test_version_argument_overrides_declared_version() -> None:
    result = Result.from_json({"cniVersion": "0.2.0", "ips": [{"address": "10.0.0.1/8"}]},
                              "1.0.0")
    assert result.cni_version == "1.0.0"
    assert len(result.ips) == 1


def test_unsupported_target_version_is_incompatible() -> None:
    with pytest.raises(IncompatibleCNIVersion):
        Result().to_json("2.0.0")


# --- hostile input -------------------------------------------------------------------------

MALFORMED: list[Any] = [
    None, [], "x", 3, True,
    {"cniVersion": 1},
    {"cniVersion": "1.0"},
    {"cniVersion": "v1.0.0"},
    {"cniVersion": "1.0.0\n"},
    {"cniVersion": "\uff11.0.0"},
    {"cniVersion": "1.0.0", "ips": {}},
    {"cniVersion": "1.0.0", "ips": [None]},
    {"cniVersion": "1.0.0", "ips": [{}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/33"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/255.255.255.0"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/0.0.0.255"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "fe80::1%eth0/64"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/ 8"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "010.0.0.1/8"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "10.0.0.1/8"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": 167772161}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "fe80::1%1"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": "0"}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": True}]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": 0.0}]},
    {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.1/8"}]},
    {"cniVersion": "0.4.0", "ips": [{"version": 4, "address": "10.0.0.1/8"}]},
    {"cniVersion": "0.4.0", "ips": [{"version": ["4"], "address": "10.0.0.1/8"}]},
    {"cniVersion": "1.0.0", "interfaces": [{"name": 5}]},
    {"cniVersion": "1.0.0", "interfaces": ["eth0"]},
    {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": "1500"}]},
    {"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]},
    {"cniVersion": "1.0.0", "routes": [{"dst": "default"}]},
    {"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "table": "main"}]},
    {"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "scope": 1.5}]},
    {"cniVersion": "1.0.0", "dns": []},
    {"cniVersion": "1.0.0", "dns": {"nameservers": "10.0.0.10"}},
    {"cniVersion": "1.0.0", "dns": {"search": [1]}},
    {"cniVersion": "1.0.0", "dns": {"domain": ["a"]}},
    {"cniVersion": "0.2.0", "ip4": {"ip": "fd00::1/64"}},
    {"cniVersion": "0.2.0", "ip6": {"ip": "10.0.0.1/8"}},
    {"cniVersion": "0.2.0", "ip4": "10.0.0.1/8"},
    {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.1/8", "routes": {}}},
]


@pytest.mark.parametrize("obj", MALFORMED, ids=lambda o: json.dumps(o)[:60])
def test_malformed_results_are_decoding_failures(obj: Any) -> None:
    with pytest.raises(DecodingFailure) as info:
        Result.from_json(obj)
    assert info.value.code == 6
    assert info.value.msg


@pytest.mark.parametrize("version", ["2.0.0", "0.5.0", "1.0.1"])
def test_unknown_result_versions_are_incompatible(version: str) -> None:
    with pytest.raises(IncompatibleCNIVersion) as info:
        Result.from_json({"cniVersion": version})
    assert info.value.code == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(
        ["cniVersion", "ips", "ip4", "ip6", "interfaces", "routes", "dns", "address", "gateway",
         "version", "interface", "name", "mtu", "dst", "gw", "table", "ip", "nameservers", "x"]
    ), children, max_size=6),
    max_leaves=25,
)


def _expect_only_cni_errors(obj: Any) -> None:
    try:
        result = Result.from_json(obj)
    except IncompatibleCNIVersion:
        # only a well-formed version string that we do not speak
        declared = obj.get("cniVersion")
        assert isinstance(declared, str)
        assert declared not in SUPPORTED_VERSIONS
        return
    except DecodingFailure:
        return
    # anything accepted must be writable in its own version (or refuse cleanly)
    try:
        json.dumps(result.to_json())
    except IncompatibleCNIVersion:
        assert not result.ips


@settings(max_examples=400)
@given(json_values)
def test_fuzz_from_json_raises_only_decoding_failure(obj: Any) -> None:
    _expect_only_cni_errors(obj)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=400)
@given(st.data(), results(), st.sampled_from(SUPPORTED_VERSIONS))
def test_fuzz_mutated_valid_results(data: st.DataObject, result: Result, version: str) -> None:
    """Replace one node of a valid result with junk: still only CNI decoding errors."""
    try:
        obj = result.to_json(version)
    except IncompatibleCNIVersion:
        return
    path = data.draw(st.sampled_from(_paths(obj)[1:] or [("cniVersion",)]))
    junk = data.draw(json_values)
    target = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = junk
    _expect_only_cni_errors(obj)


# --- address helpers -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["10.0.0.1/8", "fd00::1/128", "0.0.0.0/0", "::/0"])
def test_parse_cidr_accepts_go_forms(value: str) -> None:
    assert str(parse_cidr(value, "x")) == value


@pytest.mark.parametrize("value", ["10.0.0.1", "10.0.0.1/", "/8", "10.0.0.1/+8", "a/8", None, 8,
                                   "10.0.0.1/8\n", "fe80::1%lo/64", "10.0.0.1/٨"])
def test_parse_cidr_rejects(value: Any) -> None:
    with pytest.raises(DecodingFailure, match="invalid x"):
        parse_cidr(value, "x")


@pytest.mark.parametrize("value", ["10.0.0.1/8", "fe80::1%lo", "", "1.2.3", None, ["1.2.3.4"]])
def test_parse_ip_rejects(value: Any) -> None:
    with pytest.raises(DecodingFailure, match="invalid gw"):
        parse_ip(value, "gw")


def test_empty_gateway_means_none() -> None:
    result = Result.from_json({"cniVersion": "1.0.0",
                               "ips": [{"address": "10.0.0.2/8", "gateway": ""}],
                               "routes": [{"dst": "0.0.0.0/0", "gw": None}]})
    assert result.ips[0].gateway is None
    assert result.routes[0].gw is None
