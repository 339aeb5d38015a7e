"""Reading what a network namespace holds: links and their addresses (pod status); links,
routes, rules, qdiscs and vxlan FDB entries in one pass (``pycni inspect`` and ``graph``)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from .._record import replace
from . import _rtnl as rt
from ._netns import run_in_netns
from ._overlay import FdbEntry, list_fdb
from .links import LinkInfo, _link_info, kernel_op, reuse_sockets, route_socket, rtnl


def _links_here() -> list[LinkInfo]:
    # Two dumps (links, then every address) instead of one address request per link.
    with route_socket() as sock, kernel_op("failed to list links and addresses"):
        links = {info.index: info for info in map(_link_info, sock.links())}
        addresses: dict[int, list[str]] = {idx: [] for idx in links}
        for body in sock.addresses():
            _, prefixlen, _, _, index = rt.IFADDR.unpack_from(body)
            found = addresses.get(index)
            packed = rt.attrs(body, rt.IFADDR.size).get(rt.IFA_ADDRESS)
            if found is not None and packed is not None:
                found.append(f"{ipaddress.ip_address(packed)}/{prefixlen}")
    return [replace(links[idx], addresses=tuple(sorted(addresses[idx], key=lambda a: ":" in a)))
            for idx in sorted(links)]


def netns_links(netns: str) -> list[LinkInfo]:
    """Every link in ``netns`` (a path) with its state and addresses, by ifindex.

    NetNSNotFound (code 3) if the namespace is gone.
    """
    return run_in_netns(netns, _links_here)


@dataclass(frozen=True)
class RouteEntry:
    """One route as ``ip route`` shows it: destination, gateway, device, table, protocol."""

    dst: str
    gateway: str | None
    dev: str | None
    table: int
    scope: int
    proto: int


@dataclass(frozen=True)
class RuleEntry:
    """One policy rule: priority, source (``addr/len`` or ``all``) and table."""

    priority: int
    src: str
    table: int


@dataclass(frozen=True)
class QdiscEntry:
    """A link's non-default qdisc: its kind and parent (``root``, ``ingress`` or a handle)."""

    dev: str
    kind: str
    parent: str


@dataclass(frozen=True)
class NamespaceState:
    """What one network namespace holds, read in one pass (for ``pycni inspect``/``graph``)."""

    links: tuple[LinkInfo, ...]
    routes: tuple[RouteEntry, ...]
    rules: tuple[RuleEntry, ...]
    qdiscs: tuple[QdiscEntry, ...]
    #: (vxlan device, FDB entry with a remote) pairs: the overlay peers.
    fdb: tuple[tuple[str, FdbEntry], ...] = field(default=())


#: Tables not worth listing: local (255) holds every address's own host route.
_RT_TABLE_LOCAL = 255
_DEFAULT_QDISCS = frozenset({"noqueue", "pfifo_fast", "mq", "fq_codel", "noop"})


def _parent(handle: int) -> str:
    if handle == 0xFFFFFFFF:
        return "root"
    if handle == 0xFFFFFFF1:
        return "ingress"
    return f"{handle >> 16:x}:{handle & 0xFFFF:x}"


def _state_here() -> NamespaceState:
    links = _links_here()
    names = {link.index: link.name for link in links}
    routes: list[RouteEntry] = []
    rules: list[RuleEntry] = []
    qdiscs: list[QdiscEntry] = []
    with rtnl() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.get_routes(family=family):
                table = int(msg.get("RTA_TABLE") or msg["table"])
                if table == _RT_TABLE_LOCAL or msg["type"] != 1:  # RTN_UNICAST only
                    continue
                dst = msg.get("RTA_DST")
                zero = "0.0.0.0" if family == socket.AF_INET else "::"  # noqa: S104 - a route
                if family == socket.AF_INET6 and str(dst or "").startswith("fe80:"):
                    continue  # every IPv6 link has its link-local route
                oif = msg.get("RTA_OIF")
                routes.append(RouteEntry(
                    f"{dst or zero}/{msg['dst_len']}", msg.get("RTA_GATEWAY"),
                    names.get(int(oif)) if oif is not None else None, table,
                    int(msg["scope"]), int(msg["proto"])))
            for msg in ipr.get_rules(family=family):
                src = msg.get("FRA_SRC")
                table = int(msg.get("FRA_TABLE") or msg["table"])
                rules.append(RuleEntry(int(msg.get("FRA_PRIORITY") or 0),
                                       f"{src}/{msg['src_len']}" if src else "all", table))
        for msg in ipr.get_qdiscs():
            kind = str(msg.get("TCA_KIND"))
            if kind in _DEFAULT_QDISCS:
                continue
            dev = names.get(int(msg["index"]))
            if dev is not None:
                qdiscs.append(QdiscEntry(dev, kind, _parent(int(msg["parent"]))))
    fdb = [(link.name, entry) for link in links if link.kind == "vxlan"
           for entry in list_fdb(link.name)]
    return NamespaceState(tuple(links), tuple(routes), tuple(rules), tuple(qdiscs), tuple(fdb))


def namespace_state(netns: str | None = None) -> NamespaceState:
    """Links (with addresses), routes of every table but ``local``, policy rules, non-default
    qdiscs and vxlan FDB entries of ``netns`` (a path; None: this thread's namespace).

    NetNSNotFound (code 3) if the namespace is gone.
    """
    if netns is None:
        with reuse_sockets():
            return _state_here()
    return run_in_netns(netns, _state_here)
