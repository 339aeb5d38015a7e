"""Links that hang off another link or stand alone: macvlan, ipvlan, vlan, dummy, vrf.

A macvlan/ipvlan/vlan link is created in the namespace of its parent ("master") with
``IFLA_NET_NS_FD`` pointing at the container, so it is born there; it gets a random
temporary name first because the kernel checks the requested name against the namespace
it is created from as well (the reference plugins do the same), and is renamed inside the
container. :func:`link_request` builds the netlink request without sending it, so the
configuration handling can be tested on kernels without the ipvlan/8021q/dummy/vrf modules.

A kernel without the module answers ``EOPNOTSUPP`` ("Operation not supported"); the error
then names the missing module.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from ..spec import IPInterface, KernelError
from ._veth import NAME_ATTEMPTS, random_veth_name
from .links import _require, index_of, kernel_op, link_info, link_msg, rtnl

#: Kernel modules behind each link kind, for error messages.
MODULES = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy",
           "vrf": "vrf"}

MACVLAN_MODES = ("bridge", "private", "vepa", "passthru", "source")
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}

RTPROT_KERNEL = 2
RT_TABLE_MAIN = 254


@dataclass(frozen=True)
class SubLink:
    """What to create: the kind, the parent (for macvlan/ipvlan/vlan) and kind options.

    ``mode`` is a macvlan mode name or an ipvlan mode name (l2/l3/l3s); ``vlan_id`` is for
    vlan, ``table`` for vrf, ``bcqueuelen`` for macvlan (None: the kernel's default).
    """

    kind: str
    parent: str = ""
    mtu: int = 0
    mac: str = ""
    mode: str = ""
    vlan_id: int = 0
    table: int = 0
    bcqueuelen: int | None = None


def link_request(link: SubLink, ifname: str, *, parent_index: int | None,
                 netns_fd: int | None) -> dict[str, Any]:
    """The pyroute2 ``link("add", ...)`` arguments that create ``link`` as ``ifname``."""
    # txqlen 0 as the reference plugins' links get it: they were created with a zero
    # LinkAttrs.TxQLen, which the Go netlink library sends (kernel default: 1000).
    req: dict[str, Any] = {"ifname": ifname, "kind": link.kind, "txqlen": 0}
    if link.kind in ("macvlan", "ipvlan", "vlan"):
        if parent_index is None:
            raise KernelError(f"a {link.kind} link needs a parent interface")
        req["link"] = parent_index
    if netns_fd is not None:
        req["net_ns_fd"] = netns_fd
    if link.mtu:
        req["mtu"] = link.mtu
    if link.mac:
        req["address"] = link.mac
    if link.kind == "macvlan":
        req["macvlan_mode"] = link.mode or "bridge"
    elif link.kind == "ipvlan":
        req["ipvlan_mode"] = IPVLAN_MODES[link.mode or "l2"]
    elif link.kind == "vlan":
        req["vlan_id"] = link.vlan_id
    elif link.kind == "vrf":
        req["vrf_table"] = link.table
    return req


def _create_error(link: SubLink, name: str, exc_code: int) -> KernelError:
    what = f"{link.kind} link {name!r}" + (f" on master {link.parent!r}" if link.parent else "")
    if exc_code in (errno.EOPNOTSUPP, errno.ENOENT) and link.kind in MODULES:
        # ENOENT: older kernels answer a missing rtnl_link_ops that way.
        return KernelError(f"failed to create {what}: the kernel has no {link.kind} support "
                           f"({MODULES[link.kind]} kernel module missing)")
    return KernelError(f"failed to create {what}: {os.strerror(exc_code)}")


def create_sublink(link: SubLink, netns_fd: int | None = None, name: str = "") -> str:
    """Create ``link`` here (or, with ``netns_fd``, born in that namespace); its name.

    Without ``name`` the link gets a random temporary name, drawn again on a clash.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    with rtnl() as ipr:
        parent_index = None
        if link.parent:
            parent_index = index_of(ipr, link.parent)
            if parent_index is None:
                raise KernelError(f"failed to look up master {link.parent!r}: no such interface")
        for _ in range(NAME_ATTEMPTS):
            tmp = name or random_veth_name()
            try:
                ipr.link("add", **link_request(link, tmp, parent_index=parent_index,
                                               netns_fd=netns_fd))
            except NetlinkError as exc:
                if exc.code == errno.EEXIST and not name:
                    continue
                if exc.code == errno.EEXIST:
                    raise KernelError(f"interface {name!r} already exists") from exc
                raise _create_error(link, tmp, exc.code) from exc
            return tmp
        raise KernelError(f"failed to find a free temporary name for a {link.kind} link")


def adopt_link(tmp: str, ifname: str) -> str:
    """Rename ``tmp`` to ``ifname`` (here, the container); its MAC. ``tmp`` goes on failure."""
    from pyroute2.netlink.exceptions import NetlinkError

    with rtnl() as ipr:
        idx = index_of(ipr, tmp)
        if idx is None:
            raise KernelError(f"new link {tmp!r} is missing from the container namespace")
        problem = ""
        if index_of(ipr, ifname) is not None:
            problem = f"interface {ifname!r} already exists in the container namespace"
        else:
            try:
                ipr.link("set", index=idx, ifname=ifname)
            except NetlinkError as exc:
                problem = f"failed to rename {tmp!r} to {ifname!r}: {os.strerror(exc.code)}"
        if problem:
            with kernel_op(f"failed to delete link {tmp!r}", ok=(errno.ENODEV,)):
                ipr.link("del", index=idx)
            raise KernelError(problem)
        msg = ipr.link("get", index=idx)[0]
        return str(msg.get("IFLA_ADDRESS") or "")


# --- reading kind-specific attributes ------------------------------------------------------

@dataclass(frozen=True)
class SubLinkDetails:
    """Kind-specific state of one link (for CHECK): ``mode`` is a name as in the config."""

    kind: str
    index: int = 0
    mode: str = ""
    vlan_id: int | None = None
    table: int | None = None
    parent_index: int | None = None
    up: bool = False
    mtu: int = 0
    mac: str = ""
    master: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def sublink_details(ifname: str) -> SubLinkDetails | None:
    """Kind, mode, VLAN ID, VRF table, parent of ``ifname``; None if there is no such link."""
    with rtnl() as ipr:
        msg = link_msg(ipr, ifname)
    if msg is None:
        return None
    linkinfo = msg.get("IFLA_LINKINFO")
    kind = ""
    data: dict[str, Any] = {}
    if linkinfo is not None:
        kind = linkinfo.get("IFLA_INFO_KIND") or ""
        info_data = linkinfo.get("IFLA_INFO_DATA")
        if info_data is not None and not isinstance(info_data, (str, bytes)):
            data = {k: v for k, v in info_data["attrs"] if k != "UNKNOWN"}
    mode = ""
    if kind == "macvlan":
        mode = str(data.get("IFLA_MACVLAN_MODE", ""))
    elif kind == "ipvlan":
        names = {v: k for k, v in IPVLAN_MODES.items()}
        mode = names.get(int(data.get("IFLA_IPVLAN_MODE", -1)), "")
    vlan_id = data.get("IFLA_VLAN_ID")
    table = data.get("IFLA_VRF_TABLE")
    return SubLinkDetails(
        kind=kind, index=int(msg["index"]), mode=mode,
        vlan_id=int(vlan_id) if vlan_id is not None else None,
        table=int(table) if table is not None else None,
        parent_index=msg.get("IFLA_LINK"),
        up=bool(int(msg["flags"]) & 1),
        mtu=int(msg.get("IFLA_MTU") or 0),
        mac=str(msg.get("IFLA_ADDRESS") or ""),
        master=msg.get("IFLA_MASTER"),
        extra=data,
    )


def default_route_interface() -> str | None:
    """The interface of the first default route in the main table (IPv4 first), or None."""
    with rtnl() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            with kernel_op("failed to list routes"):
                routes = ipr.get_routes(family=family, table=RT_TABLE_MAIN)
            for msg in routes:
                oif = msg.get("RTA_OIF")
                if msg["dst_len"] == 0 and oif:
                    name = link_name(ipr, int(oif))
                    if name:
                        return name
    return None


def link_name(ipr: Any, index: int) -> str | None:
    """The name of ifindex ``index`` on the socket ``ipr``, or None."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return str(ipr.link("get", index=index)[0].get("IFLA_IFNAME"))
    except NetlinkError:
        return None


def kind_supported(kind: str) -> bool:
    """Try to create a ``kind`` link here (on a scratch veth if it needs a parent).

    For tests: run it in a scratch namespace; it leaves nothing behind.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    parent = ""
    with rtnl() as ipr:
        try:
            if kind in ("macvlan", "ipvlan", "vlan"):
                parent = random_veth_name()
                ipr.link("add", ifname=parent, kind="veth", peer=random_veth_name())
            try:
                create_sublink(SubLink(kind=kind, parent=parent, vlan_id=2, table=4242),
                               name="pytprobe0")
            except KernelError:
                return False
            ipr.link("del", ifname="pytprobe0")
            return True
        finally:
            if parent:
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", ifname=parent)


# --- raw netlink for what pyroute2 0.9 cannot encode ---------------------------------------

RTM_NEWLINK = 16
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_MACVLAN_BC_QUEUE_LEN = 7


def _attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def macvlan_bcqueuelen_request(index: int, length: int) -> bytes:
    """An RTM_NEWLINK that sets a macvlan's broadcast queue length (``bcqueuelen``).

    pyroute2 0.9 has no encoding for IFLA_MACVLAN_BC_QUEUE_LEN, so the message is built by
    hand: ifinfomsg for ``index`` and IFLA_LINKINFO{kind "macvlan", data{BC_QUEUE_LEN}}.
    """
    info = _attr(IFLA_INFO_KIND, b"macvlan\0") + _attr(
        IFLA_INFO_DATA, _attr(IFLA_MACVLAN_BC_QUEUE_LEN, struct.pack("=I", length)))
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0) + _attr(IFLA_LINKINFO, info)
    header = struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    return header + body


def set_macvlan_bcqueuelen(ifname: str, length: int) -> None:
    """Set ``bcqueuelen`` of macvlan ``ifname`` (kernel >= 5.11)."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
    if idx is None:
        raise KernelError(f"link {ifname!r} not found")
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        sock.send(macvlan_bcqueuelen_request(idx, length))
        reply = sock.recv(65536)
    finally:
        sock.close()
    _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
    if kind == NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", reply, 16)
        if code:
            raise KernelError(f"failed to set bcqueuelen {length} on {ifname!r}: "
                              f"{os.strerror(-code)}")


# --- gratuitous ARP ------------------------------------------------------------------------

def garp_frame(mac: str, address: ipaddress.IPv4Address) -> bytes:
    """A broadcast gratuitous ARP request announcing ``address`` at ``mac``."""
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = address.packed
    eth = b"\xff" * 6 + hw + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + ip + b"\xff" * 6 + ip
    return eth + arp


def announce_addresses(ifname: str, addresses: list[IPInterface]) -> None:
    """Best effort: gratuitous ARP for the IPv4 addresses, and the kernel's own notices.

    ``arp_notify``/``ndisc_notify`` make the kernel announce on later link changes; the
    explicit ARP tells the segment's switches and neighbours now (a macvlan's MAC is new
    to them, and its IP may have belonged to another MAC a moment ago). Failures are
    ignored: the attachment works without the announcement.
    """
    from ._sysctl import sysctl_try_set

    sysctl_try_set(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    sysctl_try_set(f"net/ipv6/conf/{ifname}/ndisc_notify", "1")
    info = link_info(ifname)
    if info is None or not info.mac:
        return
    v4 = [a.ip for a in addresses if isinstance(a.ip, ipaddress.IPv4Address)]
    if not v4:
        return
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    except OSError:
        return
    try:
        sock.bind((ifname, 0x0806))
        for ip in v4:
            sock.send(garp_frame(info.mac, ip))
    except OSError:
        pass
    finally:
        sock.close()


# --- VRF -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Vrf:
    """A VRF device: its name, ifindex and routing table."""

    name: str
    index: int
    table: int


def find_vrf(name: str) -> Vrf | None:
    """The VRF called ``name``; None if there is no such link; KernelError if not a VRF."""
    details = sublink_details(name)
    if details is None:
        return None
    if details.kind != "vrf" or details.table is None:
        raise KernelError(f"interface {name!r} exists and is not a VRF (kind "
                          f"{details.kind or 'unknown'!r})")
    return Vrf(name=name, index=details.index, table=details.table)


def vrf_tables() -> set[int]:
    """Routing tables of every VRF here."""
    from .links import list_links

    out = set()
    for link in list_links():
        if link.kind == "vrf":
            details = sublink_details(link.name)
            if details is not None and details.table is not None:
                out.add(details.table)
    return out


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
    from .links import list_links

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
            current = link_name(ipr, int(master)) or f"#{master}"
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
