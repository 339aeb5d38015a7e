"""Routes in the calling thread's namespace (main table unless told otherwise)."""

from __future__ import annotations

import _socket as socket  # the C module: socket.py (and selectors) cost a start ~3 ms
import errno
import ipaddress

from .._record import FrozenRecord, set_fields
from ..spec import IPAddress, IPInterface
from ._rtnl import route_metrics
from .links import _require, kernel_op, name_of, route_socket, rtnl

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
#: The rtm_protocol of routes the cluster backends make. Not one of the numbers
#: /etc/iproute2/rt_protos gives to routing daemons (bird 12, zebra 11, bgp 186...), so a
#: backend can list and delete exactly its own routes, and ``ip route show proto 112`` shows
#: them to an operator.
RTPROT_PYCNI = 112

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
#: In a delete request "nowhere" matches a route of any scope.
RT_SCOPE_NOWHERE = 255
#: rtm_flags bit of a route whose gateway is on-link by decree (``ip route ... onlink``).
RTNH_F_ONLINK = 4

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RouteInfo(FrozenRecord):
    """One route as the kernel lists it."""

    __slots__ = (
        "dst",
        "gateway",
        "oif",
        "onlink",
        "prefsrc",
        "priority",
        "protocol",
        "scope",
        "table",
    )
    dst: Network
    gateway: IPAddress | None
    oif: int | None
    scope: int
    table: int
    priority: int
    prefsrc: IPAddress | None
    #: RTM_NEWROUTE's rtm_protocol: who made the route (kernel 2, boot 3, pycni 112...).
    protocol: int
    #: RTNH_F_ONLINK: the gateway is taken as directly reachable through ``oif``.
    onlink: bool

    def __init__(self, dst: Network, gateway: IPAddress | None, oif: int | None, scope: int,  # noqa: PLR0917
                 table: int, priority: int, prefsrc: IPAddress | None, protocol: int = 0,
                 onlink: bool = False) -> None:
        set_fields(self, dst, gateway, oif, scope, table, priority, prefsrc, protocol, onlink)


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
    index: int = 0,
) -> None:
    """Add a route through ``ifname`` (``index``: its ifindex, if known, saves a lookup)."""
    with route_socket() as sock:
        idx = index or _require(sock, ifname)
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
            protocol=int(msg["proto"]),
            onlink=bool(int(msg["flags"]) & RTNH_F_ONLINK),
        ))
    return out


def _match(dst: Network, oif: int, gateway: IPAddress | None, **extra: int
           ) -> dict[str, object]:
    """The pyroute2 fields that name a route: destination, device, gateway."""
    out: dict[str, object] = {"family": _family(dst), "dst": str(dst.network_address),
                              "dst_len": dst.prefixlen, "oif": oif, **extra}
    if gateway is not None:
        out["gateway"] = str(gateway)
    return out


def replace_route(dst: Network, *, ifname: str, gateway: IPAddress | None = None,
                  onlink: bool = False, protocol: int = RTPROT_BOOT,
                  index: int | None = None) -> None:
    """``ip route replace <dst> [via <gateway>] dev <ifname> [onlink] proto <protocol>``.

    The kernel swaps a route with the same destination (and metric) in one step, so
    traffic to ``dst`` never finds no route while it is being corrected. ``index``: the
    ifindex of ``ifname`` when the caller knows it (saves a lookup per route).
    """
    with rtnl() as ipr:
        idx = index if index is not None else _require(ipr, ifname)
        kwargs = _match(dst, idx, gateway, proto=protocol)
        if onlink:
            kwargs["flags"] = RTNH_F_ONLINK
        onl = " onlink" if onlink else ""
        with kernel_op(f"failed to set route {_describe(dst, gateway, ifname)}{onl}"):
            ipr.route("replace", **kwargs)


def connected_device(address: IPAddress) -> str | None:
    """The link whose directly connected subnet (a main-table route without a gateway,
    not one of the cluster backends') holds ``address``, longest prefix first; or None."""
    best: RouteInfo | None = None
    for route in list_routes(address.version):
        if route.gateway is not None or route.oif is None or route.protocol == RTPROT_PYCNI \
                or address not in route.dst:
            continue
        if best is None or route.dst.prefixlen > best.dst.prefixlen:
            best = route
    if best is None or best.oif is None:
        return None
    with rtnl() as ipr:
        return name_of(ipr, best.oif)


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
