"""Conntrack entries over ctnetlink, in the calling thread's network namespace.

Why: a UDP flow that reached a host port before a port mapping existed keeps its conntrack
entry (and its "no NAT" decision) for as long as packets keep coming, so the new DNAT rule
never sees it. The portmap plugin deletes such entries after writing its rules, like the
reference plugin does.

This speaks netlink directly through :mod:`._netlink` (a dump filtered by the kernel, then
one delete per entry) instead of through pyroute2: importing pyroute2's conntrack module
costs about 250 ms, which is most of a plugin call. The socket is made per call in the
calling thread, so inside ``NetNS.call`` it acts on that namespace.
"""

from __future__ import annotations

import errno
import socket
import struct

from ...spec import KernelError
from .._netlink import NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NetlinkSocket, nlattr, nlattrs

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2

CTA_TUPLE_ORIG = 1
CTA_ZONE = 18
CTA_FILTER = 25
CTA_TUPLE_PROTO = 2
CTA_PROTO_NUM = 1
CTA_PROTO_DST_PORT = 3
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_REPLY_FLAGS = 2
# Which fields of the tuple in the dump request the kernel compares (kernel >= 5.8).
CTA_FILTER_FLAG_PROTO_NUM = 1 << 3
CTA_FILTER_FLAG_PROTO_DST_PORT = 1 << 5

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}

_NFGENMSG = struct.Struct("=BBH")


def _orig_proto(tuple_payload: bytes) -> tuple[int | None, int | None]:
    """(protocol number, destination port) of a CTA_TUPLE_ORIG payload."""
    proto = port = None
    for kind, payload, _ in nlattrs(tuple_payload):
        if kind != CTA_TUPLE_PROTO:
            continue
        for pkind, pvalue, _ in nlattrs(payload):
            if pkind == CTA_PROTO_NUM and pvalue:
                proto = pvalue[0]
            elif pkind == CTA_PROTO_DST_PORT and len(pvalue) >= 2:
                port = struct.unpack("!H", pvalue[:2])[0]
    return proto, port


def _ct_request(sock: NetlinkSocket, cmd: int, flags: int, family: int, body: bytes) -> list[bytes]:
    """A ctnetlink request; the replies without their nfgenmsg header."""
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | cmd
    replies = sock.request(msg_type, flags, _NFGENMSG.pack(family, 0, 0) + body)
    return [r[_NFGENMSG.size:] for r in replies]


def delete_by_dst_port(family: int, protocol: str, port: int) -> int:
    """Delete the conntrack entries whose original tuple is (``protocol``, dst ``port``).

    ``family`` is 4 or 6. Returns how many were deleted; entries that vanish meanwhile are
    not an error. Raises KernelError naming the protocol and port when ctnetlink fails.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    proto = PROTOCOLS[protocol]
    wanted = nlattr(CTA_TUPLE_ORIG | NLA_F_NESTED, nlattr(
        CTA_TUPLE_PROTO | NLA_F_NESTED,
        nlattr(CTA_PROTO_NUM, bytes([proto])) + nlattr(CTA_PROTO_DST_PORT, struct.pack("!H", port)),
    ))
    flags = struct.pack("=I", CTA_FILTER_FLAG_PROTO_NUM | CTA_FILTER_FLAG_PROTO_DST_PORT)
    dump_filter = nlattr(CTA_FILTER | NLA_F_NESTED, nlattr(CTA_FILTER_ORIG_FLAGS, flags)
                        + nlattr(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", 0)))
    what = f"IPv{family} {protocol} conntrack entries for port {port}"
    try:
        sock = NetlinkSocket(NETLINK_NETFILTER)
    except OSError as exc:
        raise KernelError(f"cannot delete {what}: ctnetlink socket: {exc.strerror}") from exc
    deleted = 0
    try:
        try:
            entries = _ct_request(sock, IPCTNL_MSG_CT_GET, NLM_F_DUMP, af, wanted + dump_filter)
        except OSError as exc:
            raise KernelError(f"cannot list {what}: {exc.strerror}") from exc
        for entry in entries:
            orig = zone = None
            for kind, payload, whole in nlattrs(entry):
                if kind == CTA_TUPLE_ORIG:
                    orig = (payload, whole)
                elif kind == CTA_ZONE:
                    zone = whole
            # The kernel filtered already; checking again keeps older kernels, which ignore
            # CTA_FILTER and dump everything, from losing unrelated entries.
            if orig is None or _orig_proto(orig[0]) != (proto, port):
                continue
            try:
                _ct_request(sock, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, af, orig[1] + (zone or b""))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
                raise KernelError(f"cannot delete {what}: {exc.strerror}") from exc
            deleted += 1
    finally:
        sock.close()
    return deleted


__all__ = ["PROTOCOLS", "delete_by_dst_port"]
