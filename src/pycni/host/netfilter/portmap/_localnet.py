"""route_localnet: let connections from 127.0.0.1 reach a container after DNAT.

A packet from 127.0.0.1 to a host port is rewritten to the container address in the OUTPUT
hook and rerouted out of the host interface that leads to the container; the kernel drops
it there as a martian unless that interface has ``route_localnet`` set. The masquerade rule
then gives it the interface's address on the way out. The reference plugin sets it on the
interface a route lookup picks for the container address; so do we, with one
RTM_GETROUTE over raw netlink (no pyroute2 import in the plugin's start-up path).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from ....spec import KernelError
from ..._netlink import NetlinkSocket, nlattr, nlattrs
from ..._sysctl import sysctl_set

RTM_GETROUTE = 26
RTA_DST = 1
RTA_OIF = 4
_RTMSG = struct.Struct("=BBBBBBBBI")


def route_ifname(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The interface the kernel would send ``address`` out of, or None if unroutable."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(family, address.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    body += nlattr(RTA_DST, address.packed)
    sock = NetlinkSocket(socket.NETLINK_ROUTE)
    try:
        replies = sock.request(RTM_GETROUTE, 0, body)
    except OSError:
        return None  # no route (ENETUNREACH): nothing to enable
    finally:
        sock.close()
    for reply in replies:
        for kind, payload, _ in nlattrs(reply[_RTMSG.size:]):
            if kind == RTA_OIF and len(payload) >= 4:
                try:
                    return socket.if_indextoname(struct.unpack("=I", payload[:4])[0])
                except OSError:
                    return None
    return None


def enable_route_localnet(address: ipaddress.IPv4Address) -> str | None:
    """Set ``route_localnet`` on the interface toward ``address``; return its name."""
    ifname = route_ifname(address)
    if ifname is None:
        return None
    try:
        sysctl_set(f"net/ipv4/conf/{ifname}/route_localnet", "1")
    except KernelError as exc:
        raise KernelError(f"unable to enable route_localnet on {ifname} (the interface toward "
                          f"{address})", str(exc)) from exc
    return ifname


__all__ = ["enable_route_localnet", "route_ifname"]
