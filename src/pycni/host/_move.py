"""Moving a pod's addresses and routes from one interface to another while it runs.

The kernel side of a live switch of a pod's network (:mod:`pycni.multi`): read what an
interface carries (:func:`snapshot_iface`), bring another interface in from a staging
namespace (:func:`move_link`), give it the same addresses and swap every route over with
``RTM_NEWROUTE`` + ``NLM_F_REPLACE`` (:func:`take_over_routes`: the kernel replaces a route
in one step, so the pod never finds no route), and answer for a moved address on the
segment it left by proxy ARP/NDP (:func:`add_proxy_neighbour`).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field

from ..spec import IPAddress, IPInterface, KernelError
from ._netns import open_netns
from ._route import RT_TABLE_MAIN, RTNH_F_ONLINK, RouteInfo
from ._sysctl import sysctl_get, sysctl_set, sysctl_try_set
from .links import _require, index_of, kernel_op, rtnl

IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
RTPROT_KERNEL = 2
NTF_PROXY = 0x08
#: Tables that only the kernel fills (local addresses, broadcast): never copied.
RT_TABLE_LOCAL = 255


@dataclass(frozen=True)
class IfaceSnapshot:
    """What one interface carries: its global addresses (and whether each has the
    kernel's prefix route) and every route through it that is not the kernel's."""

    ifname: str
    mac: str
    addresses: list[IPInterface] = field(default_factory=list)
    #: Addresses whose subnet route the plugin removed (ptp does): re-added without one.
    no_prefix_route: list[IPInterface] = field(default_factory=list)
    routes: list[RouteInfo] = field(default_factory=list)
    #: The kernel's own (prefix) routes through it: put back only when undoing a switch.
    kernel_routes: list[RouteInfo] = field(default_factory=list)


def _routes_via(ipr: object, idx: int) -> list[RouteInfo]:
    out: list[RouteInfo] = []
    for af in (socket.AF_INET, socket.AF_INET6):
        zero = str(ipaddress.ip_address(0)) if af == socket.AF_INET else "::"
        with kernel_op("failed to list routes"):
            msgs = ipr.get_routes(family=af)  # type: ignore[attr-defined]
        for msg in msgs:
            table = int(msg.get("RTA_TABLE") or msg["table"])
            if msg.get("RTA_OIF") != idx or table == RT_TABLE_LOCAL or msg["type"] != 1:
                continue
            gw, src = msg.get("RTA_GATEWAY"), msg.get("RTA_PREFSRC")
            out.append(RouteInfo(
                dst=ipaddress.ip_network(f"{msg.get('RTA_DST') or zero}/{msg['dst_len']}"),
                gateway=ipaddress.ip_address(gw) if gw else None, oif=idx,
                scope=int(msg["scope"]), table=table,
                priority=int(msg.get("RTA_PRIORITY") or 0),
                prefsrc=ipaddress.ip_address(src) if src else None,
                protocol=int(msg["proto"]), onlink=bool(int(msg["flags"]) & RTNH_F_ONLINK)))
    return out


def snapshot_iface(ifname: str) -> IfaceSnapshot:
    """Read ``ifname``'s addresses and routes (in the calling thread's namespace)."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to read {ifname!r}"):
            link = ipr.link("get", index=idx)[0]
            addr_msgs = ipr.get_addr(index=idx)
        addresses = [ipaddress.ip_interface(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}")
                     for m in addr_msgs if int(m["scope"]) == 0]
        routes = _routes_via(ipr, idx)
    kernel = {(r.dst, r.table) for r in routes if r.protocol == RTPROT_KERNEL}
    no_prefix = [a for a in addresses if a.network.prefixlen < a.max_prefixlen
                 and (a.network, RT_TABLE_MAIN) not in kernel]
    # IPv6 multicast/link-local routes come with the link; the kernel's come with addresses.
    mine = [r for r in routes if r.protocol != RTPROT_KERNEL
            and not (r.dst.version == 6 and (r.dst.is_link_local or r.dst.is_multicast))]
    return IfaceSnapshot(ifname, str(link.get("IFLA_ADDRESS") or ""), addresses, no_prefix,
                         mine, [r for r in routes if r.protocol == RTPROT_KERNEL
                                and r.table == RT_TABLE_MAIN and r.dst.version == 4])


def rename_link(old: str, new: str) -> None:
    """Rename ``old`` to ``new``, up or not.

    Linux >= 6.2 renames a link that is up; an older kernel says EBUSY, and then the link
    is taken down for the rename and its routes (which the kernel drops with the link) are
    put back: a gap of a few milliseconds.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    with rtnl() as ipr:
        idx = _require(ipr, old)
        try:
            ipr.link("set", index=idx, ifname=new)
        except NetlinkError as exc:
            if exc.code != errno.EBUSY:
                raise KernelError(f"failed to rename link {old!r} to {new!r}: "
                                  f"{exc}") from exc
        else:
            return
    saved = snapshot_iface(old)
    with rtnl() as ipr, kernel_op(f"failed to rename link {old!r} to {new!r}"):
        ipr.link("set", index=idx, state="down")
        ipr.link("set", index=idx, ifname=new)
        ipr.link("set", index=idx, state="up")
    take_over_routes(new, saved.routes)


def move_link(ifname: str, netns: str, new_name: str) -> None:
    """Move ``ifname`` (taken down) into the namespace at path ``netns`` as ``new_name``.
    The kernel drops its addresses and routes on the way. It is renamed on the side where
    ``new_name`` is free (before the move, else after it)."""
    import os

    from ._netns import run_in_netns

    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        rename_first = index_of(ipr, new_name) is None
        with kernel_op(f"failed to prepare {ifname!r} for the move"):
            ipr.link("set", index=idx, state="down")
            if rename_first:
                ipr.link("set", index=idx, ifname=new_name)
        name = new_name if rename_first else ifname
        fd = open_netns(netns)
        try:
            with kernel_op(f"failed to move {name!r} into {netns}"):
                ipr.link("set", index=idx, net_ns_fd=fd)
        finally:
            os.close(fd)
    if not rename_first:
        run_in_netns(netns, rename_link, ifname, new_name)


def add_addresses(ifname: str, addresses: list[IPInterface], *,
                  no_prefix_route: list[IPInterface] | None = None) -> None:
    """Put ``addresses`` on ``ifname`` (up) without duplicate address detection: the
    address is the pod's own, already in use on its other interface, and DAD would hold an
    IPv6 address tentative (unusable for routes) for a second or more."""
    skip = set(no_prefix_route or ())
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to set {ifname!r} up"):
            ipr.link("set", index=idx, state="up")
        for addr in addresses:
            flags = (IFA_F_NODAD if addr.version == 6 else 0) | (
                IFA_F_NOPREFIXROUTE if addr in skip else 0)
            kwargs: dict[str, object] = {"index": idx, "address": str(addr.ip),
                                         "prefixlen": addr.network.prefixlen}
            if flags:
                kwargs["IFA_FLAGS"] = flags
            if addr.version == 4 and addr.network.prefixlen < 31:
                kwargs["broadcast"] = str(addr.network.broadcast_address)
            with kernel_op(f"failed to add address {addr} to {ifname!r}", ok=(errno.EEXIST,)):
                ipr.addr("add", **kwargs)


def remove_addresses(ifname: str, addresses: list[IPInterface]) -> None:
    """Take ``addresses`` off ``ifname``; missing ones (or a missing link) are fine."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            return
        for addr in addresses:
            with kernel_op(f"failed to remove {addr} from {ifname!r}",
                           ok=(errno.EADDRNOTAVAIL, errno.ENODEV)):
                ipr.addr("del", index=idx, address=str(addr.ip),
                         prefixlen=addr.network.prefixlen)


def _route_key(route: RouteInfo) -> int:
    # Routes whose gateway needs an on-link route must come after it.
    return 0 if route.gateway is None else 1


def take_over_routes(ifname: str, routes: list[RouteInfo]) -> None:
    """``ip route replace`` each of ``routes`` through ``ifname``: a route with the same
    destination, table and metric on another interface is swapped over in one step."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        for route in sorted(routes, key=_route_key):
            kwargs: dict[str, object] = {
                "family": socket.AF_INET if route.dst.version == 4 else socket.AF_INET6,
                "dst": str(route.dst.network_address), "dst_len": route.dst.prefixlen,
                "oif": idx, "table": route.table, "scope": route.scope,
                "proto": route.protocol}
            if route.gateway is not None:
                kwargs["gateway"] = str(route.gateway)
            if route.prefsrc is not None:
                kwargs["prefsrc"] = str(route.prefsrc)
            if route.priority:
                kwargs["priority"] = route.priority
            if route.onlink:
                kwargs["flags"] = RTNH_F_ONLINK
            via = f" via {route.gateway}" if route.gateway else ""
            # EEXIST: that very route is there already (a link that came up made it).
            with kernel_op(f"failed to move route {route.dst}{via} to {ifname!r}",
                           ok=(errno.EEXIST,)):
                ipr.route("replace", **kwargs)


def host_routes_to(address: IPAddress) -> list[tuple[str, RouteInfo]]:
    """Main-table routes to exactly ``address`` (/32 or /128), with their device names."""
    from .links import name_of

    out: list[tuple[str, RouteInfo]] = []
    with rtnl() as ipr:
        for link in ipr.get_links():
            idx = int(link["index"])
            out.extend((name_of(ipr, idx) or "", route) for route in _routes_via(ipr, idx)
                       if route.table == RT_TABLE_MAIN
                       and route.dst.prefixlen == route.dst.max_prefixlen
                       and route.dst.network_address == address)
    return out


def add_proxy_neighbour(ifname: str, address: IPAddress) -> None:
    """Answer ARP (IPv4) or neighbour solicitations (IPv6) for ``address`` on ``ifname``
    with this host's MAC (``ip neigh add proxy``). The kernel answers only while its route
    to ``address`` leaves through another interface, and only with forwarding on; IPv6
    also needs ``proxy_ndp`` on the interface."""
    if address.version == 6:
        sysctl_try_set(f"net/ipv6/conf/{ifname}/proxy_ndp", "1")
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to add a proxy neighbour for {address} on {ifname!r}",
                       ok=(errno.EEXIST,)):
            ipr.neigh("add", family=socket.AF_INET if address.version == 4
                      else socket.AF_INET6, ifindex=idx, dst=str(address), flags=NTF_PROXY)


def delete_proxy_neighbour(ifname: str, address: IPAddress) -> None:
    """Remove a proxy entry; a missing one (or a missing link) is fine."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            return
        with kernel_op(f"failed to delete the proxy neighbour {address} on {ifname!r}",
                       ok=(errno.ENOENT, errno.ESRCH, errno.ENODEV)):
            ipr.neigh("del", family=socket.AF_INET if address.version == 4
                      else socket.AF_INET6, ifindex=idx, dst=str(address), flags=NTF_PROXY)



def iface_sysctls(ifname: str) -> dict[str, str]:
    """The per-interface sysctls of ``ifname`` (``net/ipv4/conf/<ifname>/*``, ipv6 too) that
    differ from what the namespace gives a new interface (``conf/default``): what was set on
    it (by tuning, say). Keys are relative (``ipv4/rp_filter``).

    The kernel keeps them per device and namespace: a device moved to another namespace
    gets that namespace's defaults, while its link attributes (MTU, MAC, flags) move with it.
    """
    import os

    out: dict[str, str] = {}
    for family in ("ipv4", "ipv6"):
        base = f"/proc/sys/net/{family}/conf/{ifname}"
        try:
            names = sorted(os.listdir(base))  # noqa: PTH208 - names only, no pathlib
        except OSError:
            continue  # IPv6 disabled
        for name in names:
            if not os.access(f"{base}/{name}", os.W_OK):
                continue
            try:
                value = sysctl_get(f"net/{family}/conf/{ifname}/{name}")
                default = sysctl_get(f"net/{family}/conf/default/{name}")
            except KernelError:
                continue  # unreadable ones (stable_secret until set)
            if value != default:
                out[f"{family}/{name}"] = value
    return out


def set_iface_sysctls(ifname: str, values: dict[str, str]) -> list[str]:
    """Write :func:`iface_sysctls`' ``values`` for ``ifname``; the keys the kernel refused
    (a value the link kept through the move is not written again)."""
    refused = []
    for key, value in values.items():
        family, name = key.split("/", 1)
        try:
            sysctl_set(f"net/{family}/conf/{ifname}/{name}", value)
        except KernelError:
            refused.append(key)
    return refused
