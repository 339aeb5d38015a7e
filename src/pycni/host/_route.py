"""Routes in the calling thread's namespace (main table unless told otherwise)."""

from __future__ import annotations

import _socket as socket  # the C module: socket.py (and selectors) cost a start ~3 ms
import errno
import ipaddress
from dataclasses import dataclass

from ..spec import IPAddress, IPInterface
from ._rtnl import route_metrics
from .links import _require, kernel_op, name_of, route_socket, rtnl

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
#: In a delete request "nowhere" matches a route of any scope.
RT_SCOPE_NOWHERE = 255

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RouteInfo:
    """One route as the kernel lists it."""

    dst: Network
    gateway: IPAddress | None
    oif: int | None
    scope: int
    table: int
    priority: int
    prefsrc: IPAddress | None


def _family(net: Network | IPInterface) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


def _describe(dst: Network, gateway: IPAddress | None, ifname: str) -> str:
    via = f" via {gateway}" if gateway is not None else ""
    return f"{dst}{via} dev {ifname}"


def add_route(
    dst: Network,
    *,
    ifname: str,
    gateway: IPAddress | None = None,
    src: IPAddress | None = None,
    scope: int | None = None,
    table: int | None = None,
    priority: int = 0,
    mtu: int = 0,
    advmss: int = 0,
    exist_ok: bool = False,
) -> None:
    """Add a route through ``ifname``."""
    with route_socket() as sock:
        idx = _require(sock, ifname)
        ok = (errno.EEXIST,) if exist_ok else ()
        with kernel_op(f"failed to add route {_describe(dst, gateway, ifname)}", ok=ok):
            # proto boot, as ``ip route add`` and the Go netlink library write: the routes
            # look the same whichever implementation made them.
            sock.route(True, _family(dst), dst.network_address.packed, dst.prefixlen, oif=idx,
                       gateway=gateway.packed if gateway is not None else b"",
                       prefsrc=src.packed if src is not None else b"",
                       scope=scope or RT_SCOPE_UNIVERSE, table=table or 0, priority=priority,
                       proto=RTPROT_BOOT, metrics=route_metrics(mtu, advmss))


def del_route(dst: Network, *, ifname: str, gateway: IPAddress | None = None,
              missing_ok: bool = False) -> None:
    """Delete the route to ``dst`` through ``ifname`` (any scope)."""
    with route_socket() as sock:
        idx = _require(sock, ifname)
        ok = (errno.ESRCH,) if missing_ok else ()
        with kernel_op(f"failed to delete route {_describe(dst, gateway, ifname)}", ok=ok):
            sock.route(False, _family(dst), dst.network_address.packed, dst.prefixlen, oif=idx,
                       gateway=gateway.packed if gateway is not None else b"",
                       scope=RT_SCOPE_NOWHERE)


def list_routes(family: int, *, table: int = RT_TABLE_MAIN) -> list[RouteInfo]:
    """Unicast routes of ``family`` (4 or 6) in ``table``."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    with rtnl() as ipr, kernel_op(f"failed to list IPv{family} routes"):
        msgs = ipr.get_routes(family=af)
    out = []
    zero = str(ipaddress.IPv4Address(0)) if family == 4 else "::"
    for msg in msgs:
        msg_table = msg.get("RTA_TABLE") or msg["table"]
        if msg_table != table or msg["type"] != 1:  # RTN_UNICAST
            continue
        gw = msg.get("RTA_GATEWAY")
        src = msg.get("RTA_PREFSRC")
        out.append(RouteInfo(
            dst=ipaddress.ip_network(f"{msg.get('RTA_DST') or zero}/{msg['dst_len']}"),
            gateway=ipaddress.ip_address(gw) if gw else None,
            oif=msg.get("RTA_OIF"),
            scope=int(msg["scope"]),
            table=int(msg_table),
            priority=int(msg.get("RTA_PRIORITY") or 0),
            prefsrc=ipaddress.ip_address(src) if src else None,
        ))
    return out


def default_route_interface() -> str | None:
    """The interface of the first default route in the main table (IPv4 first), or None."""
    with rtnl() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            with kernel_op("failed to list routes"):
                routes = ipr.get_routes(family=family, table=RT_TABLE_MAIN)
            for msg in routes:
                oif = msg.get("RTA_OIF")
                if msg["dst_len"] == 0 and oif:
                    name = name_of(ipr, int(oif))
                    if name:
                        return name
    return None
