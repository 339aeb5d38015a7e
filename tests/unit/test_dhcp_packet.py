"""The DHCP wire format and the dhcp IPAM section, without a network."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.ipam.dhcp import (
    DEFAULT_REQUEST,
    DEFAULT_SOCKET_PATH,
    DhcpIpamConfig,
    Message,
    client_id,
    parse_option,
)
from pycni.ipam.dhcp import _packet as p
from pycni.spec import DecodingFailure, InvalidNetworkConfig, NetworkConfig

Net = ipaddress.IPv4Network
IP = ipaddress.IPv4Address


def test_message_round_trip_and_bootp_minimum() -> None:
    msg = Message(xid=0x1234ABCD, flags=p.FLAG_BROADCAST, ciaddr=IP("10.0.0.5"),
                  chaddr=bytes.fromhex("0a0b0c0d0e0f"),
                  options={p.OPT_MESSAGE_TYPE: bytes((p.REQUEST,)), p.OPT_CLIENT_ID: b"\0abc",
                           p.OPT_HOST_NAME: b"x" * 300})
    wire = msg.encode()
    assert len(wire) >= p.MIN_BOOTP_SIZE
    assert wire[236:240] == p.MAGIC_COOKIE
    back = Message.decode(wire)
    assert back == msg
    assert back.type_name == "DHCPREQUEST"


def test_long_option_is_split_and_joined() -> None:
    wire = Message(options={p.OPT_HOST_NAME: b"y" * 300}).encode()
    # Two pieces: 255 then 45 bytes (RFC 3396).
    assert wire[240:242] == bytes((p.OPT_HOST_NAME, 255))
    assert wire[240 + 257:240 + 259] == bytes((p.OPT_HOST_NAME, 45))


@pytest.mark.parametrize("data", [b"", b"\0" * 100, b"\0" * 236 + b"nope"])
def test_decode_rejects_non_dhcp(data: bytes) -> None:
    with pytest.raises(DecodingFailure):
        Message.decode(data)


@given(st.binary(max_size=600))
def test_decode_never_crashes(data: bytes) -> None:
    with contextlib.suppress(DecodingFailure):
        Message.decode(p.MAGIC_COOKIE.join([b"\0" * 236, data]))


def test_udp_frame_checksums_and_parse() -> None:
    payload = Message(op=p.BOOTREPLY, xid=7).encode()
    frame = p.udp_frame(payload, IP("10.0.0.1"), IP("10.0.0.9"), sport=67, dport=68)
    assert p._checksum(frame[:20]) == 0
    pseudo = IP("10.0.0.1").packed + IP("10.0.0.9").packed + struct.pack("!BBH", 0, 17,
                                                                         len(frame) - 20)
    assert p._checksum(pseudo + frame[20:]) == 0
    assert p.parse_udp_frame(frame) == payload
    assert p.parse_udp_frame(frame, dport=67) is None
    assert p.parse_udp_frame(b"\x60" + frame[1:]) is None  # not IPv4


def test_classless_routes_round_trip() -> None:
    routes = [(Net("10.200.0.0/16"), IP("10.99.0.2")), (Net("0.0.0.0/0"), IP("10.99.0.1")),
              (Net("192.168.7.128/25"), p.ANY), (Net("10.1.2.3/32"), IP("10.9.9.9"))]
    assert p.classless_routes(p.encode_classless_routes(routes)) == routes
    # A truncated tail is dropped, the good head kept (RFC 3442 s3).
    assert p.classless_routes(p.encode_classless_routes(routes)[:-2]) == routes[:-1]
    assert p.classless_routes(bytes((33, 1, 2, 3, 4, 5, 6, 7, 8))) == []


def test_static_routes_are_classful() -> None:
    data = IP("10.0.0.0").packed + IP("1.1.1.1").packed + IP("172.16.0.0").packed + \
        IP("2.2.2.2").packed + IP("192.168.5.0").packed + IP("3.3.3.3").packed
    assert p.static_routes(data) == [(Net("10.0.0.0/8"), IP("1.1.1.1")),
                                     (Net("172.16.0.0/16"), IP("2.2.2.2")),
                                     (Net("192.168.5.0/24"), IP("3.3.3.3"))]


def test_domain_search_with_compression() -> None:
    # "eng.example.com", then "example.com" as a pointer into the first name.
    data = b"\x03eng\x07example\x03com\x00" + b"\xc0\x04" + b"\x03ops\xc0\x04"
    assert p.domain_search(data) == ["eng.example.com", "example.com", "ops.example.com"]
    assert p.domain_search(b"\xc0") == []


def test_subnet_mask_and_times() -> None:
    assert p.subnet_mask(IP("255.255.254.0").packed) == 23
    assert p.subnet_mask(IP("255.0.255.0").packed) is None
    assert p.seconds(p.encode_seconds(3600)) == 3600
    assert p.seconds(b"\0") is None


# -- the ipam section ----------------------------------------------------------------------

def _conf(ipam: dict[str, object]) -> NetworkConfig:
    return NetworkConfig.parse({"cniVersion": "1.1.0", "name": "lan", "type": "macvlan",
                                "ipam": {"type": "dhcp", **ipam}})


def test_defaults() -> None:
    cfg = DhcpIpamConfig.load(_conf({}))
    assert cfg.socket_path == DEFAULT_SOCKET_PATH
    assert cfg.request == DEFAULT_REQUEST
    assert cfg.options({}) == {p.OPT_PARAMETER_LIST: bytes(DEFAULT_REQUEST)}


def test_request_and_provide() -> None:
    cfg = DhcpIpamConfig.load(_conf({
        "daemonSocketPath": "/tmp/x.sock",
        "request": [{"option": "42"}, {"option": "ntp-servers"}, {"skipDefault": True}],
        "provide": [{"option": "host-name", "value": "literal", "fromArg": "K8S_POD_NAME"},
                    {"option": 60, "value": "vendor"}, {"option": "user-class",
                                                        "fromArg": "MISSING"}],
        "priority": 50,
    }))
    assert cfg.socket_path == "/tmp/x.sock"
    assert cfg.priority == 50
    assert cfg.request == (42,)
    opts = cfg.options({"K8S_POD_NAME": "web-1"})
    assert opts == {p.OPT_HOST_NAME: b"web-1", p.OPT_VENDOR_CLASS: b"vendor",
                    p.OPT_PARAMETER_LIST: bytes((42,))}
    assert cfg.options({})[p.OPT_HOST_NAME] == b"literal"


def test_null_keys_read_as_absent() -> None:
    # Go's encoding/json leaves a field at its zero value for null.
    cfg = DhcpIpamConfig.load(_conf({"daemonSocketPath": None, "priority": None,
                                     "request": [{"option": "42", "skipDefault": None}]}))
    assert (cfg.socket_path, cfg.priority) == (DEFAULT_SOCKET_PATH, 0)
    assert cfg.request == (42, *(c for c in DEFAULT_REQUEST if c != 42))


@pytest.mark.parametrize(("ipam", "field"), [
    ({"request": [{"option": "no-such-option"}]}, "ipam.request[0].option"),
    ({"request": [{"option": "256"}]}, "ipam.request[0].option"),
    ({"request": {"option": 3}}, "ipam.request"),
    ({"provide": [{"option": 53, "value": "x"}]}, "ipam.provide[0].option"),
    ({"provide": [{"option": 12, "value": "x" * 256}]}, "ipam.provide[0].value"),
    ({"provide": [{"option": 12, "value": 5}]}, "ipam.provide[0].value"),
    ({"priority": -1}, "ipam.priority"),
    ({"priority": "high"}, "ipam.priority"),
    ({"daemonSocketPath": 5}, "ipam.daemonSocketPath"),
    ({"daemonSocketPath": False}, "ipam.daemonSocketPath"),
    ({"request": [{"skipDefault": "yes"}]}, "ipam.request[0].skipDefault"),
])
def test_bad_config_names_the_field(ipam: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidNetworkConfig) as err:
        DhcpIpamConfig.load(_conf(ipam))
    assert err.value.code == 7
    assert field in err.value.msg


def test_parse_option() -> None:
    assert parse_option("classless-static-routes", "x") == 121
    assert parse_option(" 3 ", "x") == 3
    with pytest.raises(InvalidNetworkConfig):
        parse_option(True, "x")


def test_client_id_is_the_references() -> None:
    assert client_id("abc", "lan", "eth0") == "abc/lan/eth0"
    assert len(client_id("c" * 300, "lan", "eth0").encode()) == 254
