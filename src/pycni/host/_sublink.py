"""Links made for one container: macvlan, ipvlan, vlan (off a parent link), dummy, vrf.

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
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from ..spec import KernelError
from ._netlink import NLM_F_ACK, NetlinkSocket, nlattr
from ._veth import NAME_ATTEMPTS, random_veth_name
from .links import IPVLAN_MODES, _require, index_of, kernel_op, rtnl

#: Kernel modules behind each link kind, for error messages.
MODULES = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy",
           "vrf": "vrf"}

#: macvlan modes by name (IPVLAN_MODES is beside the link reader, which names them).
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru", "source")


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


# --- what pyroute2 0.9 cannot encode ------------------------------------------------------

RTM_NEWLINK = 16
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_MACVLAN_BC_QUEUE_LEN = 7


def macvlan_bcqueuelen_request(index: int, length: int) -> bytes:
    """The RTM_NEWLINK payload that sets a macvlan's broadcast queue length (``bcqueuelen``).

    pyroute2 0.9 has no encoding for IFLA_MACVLAN_BC_QUEUE_LEN: ifinfomsg for ``index`` and
    IFLA_LINKINFO{kind "macvlan", data{BC_QUEUE_LEN}}, for :class:`~._netlink.NetlinkSocket`.
    """
    info = nlattr(IFLA_INFO_KIND, b"macvlan\0") + nlattr(
        IFLA_INFO_DATA, nlattr(IFLA_MACVLAN_BC_QUEUE_LEN, struct.pack("=I", length)))
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0) + nlattr(IFLA_LINKINFO, info)


def set_macvlan_bcqueuelen(ifname: str, length: int) -> None:
    """Set ``bcqueuelen`` of macvlan ``ifname`` (kernel >= 5.11)."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
    try:
        with NetlinkSocket(socket.NETLINK_ROUTE) as sock:
            sock.request(RTM_NEWLINK, NLM_F_ACK, macvlan_bcqueuelen_request(idx, length))
    except OSError as exc:
        raise KernelError(f"failed to set bcqueuelen {length} on {ifname!r}: "
                          f"{exc.strerror}") from exc
