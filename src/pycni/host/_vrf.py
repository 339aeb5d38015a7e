"""VRF devices: creating one, and moving a link (with its addresses and routes) into it.

A VRF is a link of kind ``vrf`` bound to a routing table; enslaving a link to it puts the
link's routes in that table. Runs in the calling thread's namespace (the container's).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from ..spec import KernelError
from ._sublink import SubLink, create_sublink
from .links import _require, index_of, kernel_op, link_info, list_links, name_of, rtnl

RTPROT_KERNEL = 2
RT_TABLE_MAIN = 254


@dataclass(frozen=True)
class Vrf:
    """A VRF device: its name, ifindex and routing table."""

    name: str
    index: int
    table: int


def find_vrf(name: str) -> Vrf | None:
    """The VRF called ``name``; None if there is no such link; KernelError if not a VRF."""
    info = link_info(name)
    if info is None:
        return None
    if info.kind != "vrf" or info.table is None:
        raise KernelError(f"interface {name!r} exists and is not a VRF (kind "
                          f"{info.kind or 'unknown'!r})")
    return Vrf(name=name, index=info.index, table=info.table)


def vrf_tables() -> set[int]:
    """Routing tables of every VRF here."""
    return {link.table for link in list_links() if link.kind == "vrf" and link.table is not None}


def free_vrf_table(taken: set[int]) -> int:
    """The lowest table ID >= 1 no VRF uses (as the reference plugin picks it)."""
    table = 1
    while table in taken:
        table += 1
    return table


def create_vrf(name: str, table: int) -> Vrf:
    """Create VRF ``name`` on ``table`` (0: the lowest free table) and set it up."""
    if not table:
        table = free_vrf_table(vrf_tables())
    create_sublink(SubLink(kind="vrf", table=table), name=name)
    with rtnl() as ipr:
        idx = _require(ipr, name)
        with kernel_op(f"failed to set VRF {name!r} up"):
            ipr.link("set", index=idx, state="up")
    return Vrf(name=name, index=idx, table=table)


def vrf_members(vrf: Vrf) -> list[str]:
    """Names of the links enslaved to ``vrf``."""
    return [link.name for link in list_links() if link.master == vrf.index]


def _moved_routes(ipr: Any, index: int) -> list[Any]:
    """Routes through ``index`` in the main table that the kernel will not move itself.

    Enslaving cycles the device: the kernel re-creates the connected (proto kernel) routes
    in the VRF's table and flushes the rest from the main table.
    """
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family, table=RT_TABLE_MAIN, oif=index):
            if msg["proto"] == RTPROT_KERNEL or msg["type"] != 1:  # unicast only
                continue
            dst = msg.get("RTA_DST")
            if dst and ipaddress.ip_address(dst).is_link_local:
                continue
            out.append(msg)
    return out


def enslave_to_vrf(ifname: str, vrf: Vrf) -> None:
    """Put ``ifname`` into ``vrf``, keeping its IPv6 addresses and moving its routes.

    IPv6 addresses go when the device is cycled unless ``keep_addr_on_down`` is set, so
    they are put back; routes through it move from the main table to the VRF's table.
    """
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            raise KernelError(f"interface {ifname!r} not found in the container namespace")
        msg = ipr.link("get", index=idx)[0]
        master = msg.get("IFLA_MASTER")
        if master:
            current = name_of(ipr, int(master)) or f"#{master}"
            raise KernelError(f"interface {ifname!r} already has a master: {current}")
        v6 = [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in
              ipr.get_addr(index=idx, family=socket.AF_INET6)]
        routes = _moved_routes(ipr, idx)
        with kernel_op(f"failed to set VRF {vrf.name!r} as master of {ifname!r}"):
            ipr.link("set", index=idx, master=vrf.index)
        now = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in
               ipr.get_addr(index=idx, family=socket.AF_INET6)}
        for addr, plen in v6:
            if (addr, plen) not in now:
                with kernel_op(f"failed to restore {addr}/{plen} on {ifname!r} in VRF "
                               f"{vrf.name!r}", ok=(errno.EEXIST,)):
                    ipr.addr("add", index=idx, address=addr, prefixlen=plen)
        for route in routes:
            req = {"family": route["family"], "dst_len": route["dst_len"], "oif": idx,
                   "table": vrf.table, "scope": route["scope"], "proto": route["proto"]}
            for attr, key in (("RTA_DST", "dst"), ("RTA_GATEWAY", "gateway"),
                              ("RTA_PRIORITY", "priority"), ("RTA_PREFSRC", "prefsrc")):
                value = route.get(attr)
                if value is not None:
                    req[key] = value
            with kernel_op(f"failed to move route {req.get('dst', 'default')}/"
                           f"{route['dst_len']} to VRF table {vrf.table}"):
                ipr.route("replace", **req)


def release_from_vrf(ifname: str) -> bool:
    """Take ``ifname`` out of its master; False if there is no such link."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            return False
        with kernel_op(f"failed to release {ifname!r} from its VRF"):
            ipr.link("set", index=idx, master=0)
        return True
