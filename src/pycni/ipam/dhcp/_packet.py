"""The DHCPv4 wire format (RFC 2131/2132): BOOTP header, options, and the IPv4/UDP frame.

No I/O here: :class:`Message` encodes to and decodes from bytes, :func:`udp_frame` wraps a
payload in the IPv4 and UDP headers a packet socket must supply itself (a client without an
address cannot use the kernel's UDP stack to receive an OFFER), :func:`parse_udp_frame`
unwraps what such a socket reads. Option values stay raw bytes; the helpers at the end read
the options the lease needs (mask, routers, routes, times, DNS).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ...spec import DecodingFailure

IPv4 = ipaddress.IPv4Address
IPv4Net = ipaddress.IPv4Network

#: 0.0.0.0, the source of a client without an address, and 255.255.255.255.
ANY = IPv4(0)
BROADCAST = IPv4("255.255.255.255")

SERVER_PORT = 67
CLIENT_PORT = 68

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHER = 1
#: The broadcast bit of ``flags``: asks the server to broadcast its reply.
FLAG_BROADCAST = 0x8000
MAGIC_COOKIE = b"\x63\x82\x53\x63"
#: BOOTP's fixed part: op..file, before the magic cookie.
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
#: RFC 2131 s2: a client must accept messages up to 576 bytes; small ones are padded to the
#: BOOTP minimum of 300 bytes because some relays and servers drop shorter ones.
MIN_BOOTP_SIZE = 300

# Message types (option 53).
DISCOVER = 1
OFFER = 2
REQUEST = 3
DECLINE = 4
ACK = 5
NAK = 6
RELEASE = 7
INFORM = 8
MESSAGE_TYPE_NAMES = {DISCOVER: "DHCPDISCOVER", OFFER: "DHCPOFFER", REQUEST: "DHCPREQUEST",
                      DECLINE: "DHCPDECLINE", ACK: "DHCPACK", NAK: "DHCPNAK",
                      RELEASE: "DHCPRELEASE", INFORM: "DHCPINFORM"}

# Option codes this client reads or writes.
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOST_NAME = 12
OPT_DOMAIN_NAME = 15
OPT_STATIC_ROUTES = 33
OPT_VENDOR_CLASS = 60
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETER_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_RENEWAL_TIME = 58
OPT_REBINDING_TIME = 59
OPT_CLIENT_ID = 61
OPT_USER_CLASS = 77
OPT_DOMAIN_SEARCH = 119
OPT_CLASSLESS_ROUTES = 121
OPT_END = 255


@dataclass
class Message:
    """One DHCP message. ``options`` maps code -> raw value, in wire order."""

    op: int = BOOTREQUEST
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4 = ANY
    yiaddr: IPv4 = ANY
    siaddr: IPv4 = ANY
    giaddr: IPv4 = ANY
    chaddr: bytes = b"\0" * 6
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def message_type(self) -> int:
        """Option 53, or 0 for a plain BOOTP message."""
        value = self.options.get(OPT_MESSAGE_TYPE, b"")
        return value[0] if len(value) == 1 else 0

    @property
    def type_name(self) -> str:
        """``DHCPACK`` and so on, for logs and messages."""
        return MESSAGE_TYPE_NAMES.get(self.message_type, f"type {self.message_type}")

    @property
    def server_id(self) -> IPv4 | None:
        """Option 54, the server identifier."""
        return _one_ip(self.options.get(OPT_SERVER_ID))

    def encode(self) -> bytes:
        """The message as it goes on the wire (options in insertion order, then END)."""
        body = bytearray(_HEADER.pack(
            self.op, HTYPE_ETHER, len(self.chaddr), 0, self.xid, self.secs, self.flags,
            self.ciaddr.packed, self.yiaddr.packed, self.siaddr.packed, self.giaddr.packed,
            self.chaddr.ljust(16, b"\0"), b"", b""))
        body += MAGIC_COOKIE
        for code, value in self.options.items():
            body += _encode_option(code, value)
        body.append(OPT_END)
        if len(body) < MIN_BOOTP_SIZE:
            body += b"\0" * (MIN_BOOTP_SIZE - len(body))
        return bytes(body)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        """Parse a message; DecodingFailure if it is not DHCP.

        Long options (RFC 3396) are concatenated. The ``file``/``sname`` overload (option 52)
        is not followed: no server we talk to needs it for the options we read.
        """
        if len(data) < _HEADER.size + len(MAGIC_COOKIE):
            raise DecodingFailure(f"DHCP message too short ({len(data)} bytes)")
        (op, _htype, hlen, _hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
         _sname, _file) = _HEADER.unpack_from(data)
        if data[_HEADER.size:_HEADER.size + 4] != MAGIC_COOKIE:
            raise DecodingFailure("not a DHCP message: magic cookie missing")
        options: dict[int, bytes] = {}
        pos = _HEADER.size + 4
        while pos < len(data):
            code = data[pos]
            if code == OPT_END:
                break
            if code == OPT_PAD:
                pos += 1
                continue
            if pos + 1 >= len(data):
                raise DecodingFailure(f"DHCP option {code} truncated")
            size = data[pos + 1]
            value = data[pos + 2:pos + 2 + size]
            if len(value) != size:
                raise DecodingFailure(f"DHCP option {code} truncated")
            options[code] = options.get(code, b"") + value
            pos += 2 + size
        return cls(op=op, xid=xid, secs=secs, flags=flags, ciaddr=IPv4(ciaddr),
                   yiaddr=IPv4(yiaddr), siaddr=IPv4(siaddr), giaddr=IPv4(giaddr),
                   chaddr=chaddr[:min(hlen, 16)], options=options)


def _encode_option(code: int, value: bytes) -> bytes:
    """``code len value``, split into 255-byte pieces (RFC 3396) when longer."""
    if not value:
        return bytes((code, 0))
    out = bytearray()
    for start in range(0, len(value), 255):
        piece = value[start:start + 255]
        out += bytes((code, len(piece))) + piece
    return bytes(out)


# -- the IPv4/UDP frame a packet socket sends and receives -------------------------------

_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP_HEADER = struct.Struct("!HHHH")
_IP_MF_OFFSET = 0x3FFF  # more-fragments flag and fragment offset: nonzero means a fragment


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(payload: bytes, src: IPv4, dst: IPv4,
              sport: int = CLIENT_PORT, dport: int = SERVER_PORT) -> bytes:
    """An IPv4 packet carrying ``payload`` in UDP, checksums filled in."""
    udp_len = _UDP_HEADER.size + len(payload)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, udp_len)
    udp_sum = _checksum(pseudo + _UDP_HEADER.pack(sport, dport, udp_len, 0) + payload)
    # 0 means "no checksum" in UDP over IPv4, so a computed 0 is sent as its complement.
    udp = _UDP_HEADER.pack(sport, dport, udp_len, udp_sum or 0xFFFF)
    total = _IP_HEADER.size + udp_len
    header = _IP_HEADER.pack(0x45, 0x10, total, 0, 0, 64, 17, 0, src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp + payload


def parse_udp_frame(frame: bytes, dport: int = CLIENT_PORT) -> bytes | None:
    """The UDP payload of an IPv4 packet to ``dport``; None for anything else.

    Checksums are not verified: a packet socket on a veth sees packets whose checksum the
    sender left to offload, and the xid/chaddr match is what ties a reply to us.
    """
    if len(frame) < _IP_HEADER.size + _UDP_HEADER.size or frame[0] >> 4 != 4:
        return None
    ihl = (frame[0] & 0x0F) * 4
    total, frag, proto = (struct.unpack_from("!H", frame, 2)[0],
                          struct.unpack_from("!H", frame, 6)[0], frame[9])
    if proto != 17 or frag & _IP_MF_OFFSET or ihl < _IP_HEADER.size:
        return None
    _sport, udp_dport, udp_len, _sum = _UDP_HEADER.unpack_from(frame, ihl)
    if udp_dport != dport or udp_len < _UDP_HEADER.size:
        return None
    end = min(ihl + udp_len, total, len(frame))
    return frame[ihl + _UDP_HEADER.size:end]


# -- reading options ----------------------------------------------------------------------

def _one_ip(value: bytes | None) -> IPv4 | None:
    return IPv4(value[:4]) if value is not None and len(value) >= 4 else None


def ip_list(value: bytes | None) -> list[IPv4]:
    """A list-of-addresses option (routers, DNS servers)."""
    if not value:
        return []
    return [IPv4(value[i:i + 4]) for i in range(0, len(value) - len(value) % 4, 4)]


def seconds(value: bytes | None) -> int | None:
    """A 32-bit time option (lease time, T1, T2)."""
    if value is None or len(value) != 4:
        return None
    result: int = struct.unpack("!I", value)[0]
    return result


def encode_seconds(value: int) -> bytes:
    """The wire form of a 32-bit time option."""
    return struct.pack("!I", value)


def subnet_mask(value: bytes | None) -> int | None:
    """Option 1 as a prefix length; None if absent or not a contiguous mask."""
    ip = _one_ip(value)
    if ip is None:
        return None
    try:
        return IPv4Net(f"0.0.0.0/{ip}").prefixlen
    except ValueError:
        return None


def classless_routes(value: bytes | None) -> list[tuple[IPv4Net, IPv4]]:
    """Option 121 (RFC 3442): (destination, router) pairs; router 0.0.0.0 means on-link.

    Each entry is the prefix length, the significant octets of the destination, then the
    router. A malformed tail is dropped, as RFC 3442 s3 asks of a client.
    """
    routes: list[tuple[IPv4Net, IPv4]] = []
    data = value or b""
    pos = 0
    while pos < len(data):
        width = data[pos]
        octets = (width + 7) // 8
        if width > 32 or pos + 1 + octets + 4 > len(data):
            break
        dest = data[pos + 1:pos + 1 + octets].ljust(4, b"\0")
        router = data[pos + 1 + octets:pos + 5 + octets]
        try:
            routes.append((IPv4Net((dest, width)), IPv4(router)))
        except ValueError:  # host bits set in the destination
            break
        pos += 5 + octets
    return routes


def encode_classless_routes(routes: Iterable[tuple[IPv4Net, IPv4]]) -> bytes:
    """The wire form of option 121 (used by test servers)."""
    out = bytearray()
    for net, router in routes:
        octets = (net.prefixlen + 7) // 8
        out += bytes((net.prefixlen,)) + net.network_address.packed[:octets] + router.packed
    return bytes(out)


def static_routes(value: bytes | None) -> list[tuple[IPv4Net, IPv4]]:
    """Option 33: (classful destination, router) pairs."""
    routes: list[tuple[IPv4Net, IPv4]] = []
    data = value or b""
    for pos in range(0, len(data) - len(data) % 8, 8):
        dest, router = IPv4(data[pos:pos + 4]), IPv4(data[pos + 4:pos + 8])
        first = dest.packed[0]
        prefix = 8 if first < 128 else 16 if first < 192 else 24
        routes.append((IPv4Net((dest, prefix), strict=False), router))
    return routes


def domain_search(value: bytes | None) -> list[str]:
    """Option 119 (RFC 3397): DNS-encoded names, with compression pointers."""
    data = value or b""
    names: list[str] = []
    pos = 0
    while pos < len(data):
        labels: list[str] = []
        cursor, jumps, end = pos, 0, None
        while cursor < len(data):
            size = data[cursor]
            if size == 0:
                cursor += 1
                break
            if size & 0xC0 == 0xC0:
                if cursor + 1 >= len(data) or jumps > 32:
                    return names
                if end is None:
                    end = cursor + 2
                cursor = ((size & 0x3F) << 8) | data[cursor + 1]
                jumps += 1
                continue
            labels.append(data[cursor + 1:cursor + 1 + size].decode("ascii", "replace"))
            cursor += 1 + size
        pos = end if end is not None else cursor
        if labels:
            names.append(".".join(labels))
    return names
