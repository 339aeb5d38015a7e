"""Linux bridges and their ports, in the calling thread's namespace."""

from __future__ import annotations

import errno
import sys

from ..spec import KernelError
from . import _rtnl as rt
from ._netlink import nlattr
from ._sysctl import sysctl_try_set
from ._undo import Undo
from .links import (
    IFF_UP,
    LinkInfo,
    _link_info,
    _require,
    delete_link,
    index_of,
    kernel_op,
    link_info,
    list_links,
    route_socket,
    rtnl,
    set_promisc,
)

BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
_BRPORT_MODE = 4
_BRPORT_ISOLATED = 33


def delete_bridge_if_unused(name: str) -> None:
    """Delete bridge ``name`` unless a port has joined it (another pod's ADD found it)."""
    ports = bridge_ports(name)
    if ports:
        print(f"pycni: rollback: keeping bridge {name}: ports {', '.join(ports)} use it",
              file=sys.stderr)
        return
    delete_link(name)  # gone already is fine


def ensure_bridge(name: str, *, mtu: int = 0, promisc: bool = False,
                  vlan_filtering: bool = False, undo: Undo | None = None) -> LinkInfo:
    """Create bridge ``name`` unless it exists, then set it up; return it.

    An existing link of another kind is an error. IPv6 router advertisements are ignored on
    it (``accept_ra=0``): the plugin owns the bridge's routes. A bridge this call creates is
    recorded on ``undo``: a failed ADD removes it again unless another pod's port joined it.
    """
    existing = link_info(name)
    if existing is not None and existing.kind != "bridge":
        raise KernelError(f"{name!r} already exists but is a {existing.kind or 'non-bridge'} "
                          "link, expected a bridge")
    if existing is None:
        create = rt.ifinfo() + rt.string(rt.IFLA_IFNAME, name)
        if mtu:
            create += rt.u32(rt.IFLA_MTU, mtu)
        with route_socket() as sock, kernel_op(f"could not add bridge {name!r}"):
            try:
                sock.new_link(create + rt.linkinfo("bridge"))
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                # A concurrent ADD made it since the lookup: it is that pod's bridge, so a
                # rollback of this ADD must not delete it (the kind is checked below).
                created = False
            else:
                created = True
        if created and undo is not None:
            undo.push(f"delete bridge {name}", delete_bridge_if_unused, name)
    if vlan_filtering:
        with rtnl() as ipr:
            _set_vlan_filtering(ipr, name)
    if promisc:
        set_promisc(name, True)
    sysctl_try_set(f"net/ipv6/conf/{name}/accept_ra", "0")
    if existing is not None and existing.up and not (vlan_filtering or promisc):
        # Every pod's ADD but the first finds the bridge as the read above left it: setting
        # it up and reading it back would be two more requests with the same answer.
        return existing
    with route_socket() as sock:
        idx = _require(sock, name)
        with kernel_op(f"failed to set bridge {name!r} up"):
            sock.set_link(idx, flags=IFF_UP, change=IFF_UP)
        body = sock.get_link(index=idx)
    info = None if body is None else _link_info(body)
    if info is None or info.kind != "bridge":
        raise KernelError(f"bridge {name!r} vanished while it was being set up")
    return info


def _set_vlan_filtering(ipr: object, name: str) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    idx = _require(ipr, name)
    try:
        ipr.link("set", index=idx, kind="bridge", br_vlan_filtering=1)  # type: ignore[attr-defined]
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            raise KernelError(
                f"cannot enable vlan_filtering on bridge {name!r}: this kernel has no bridge "
                "VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING), needed by vlan/vlanTrunk"
            ) from exc
        raise KernelError(f"cannot enable vlan_filtering on bridge {name!r}: "
                          f"{exc}") from exc


def attach_port(port: str, bridge: str, *, hairpin: bool = False,
                isolated: bool = False, port_index: int = 0, bridge_index: int = 0) -> None:
    """Enslave ``port`` to ``bridge`` and set its hairpin and isolation flags (the indexes,
    when the caller has them, save looking the links up)."""
    with route_socket() as sock:
        pidx = port_index or _require(sock, port)
        bidx = bridge_index or _require(sock, bridge)
        with kernel_op(f"failed to connect {port!r} to bridge {bridge!r}"):
            sock.set_link(pidx, attributes=rt.u32(rt.IFLA_MASTER, bidx))
        # The port's flags go to its master's driver as IFLA_INFO_SLAVE_DATA.
        flags = nlattr(_BRPORT_MODE, bytes([int(hairpin)])) + \
            nlattr(_BRPORT_ISOLATED, bytes([int(isolated)]))
        with kernel_op(f"failed to set hairpin={int(hairpin)} isolated={int(isolated)} "
                       f"on bridge port {port!r}"):
            sock.set_link(pidx, attributes=rt.linkinfo("bridge_slave", slave_data=flags))


def set_port_vlans(port: str, *, pvid: int = 0, trunk: tuple[int, ...] = (),
                   remove_default: bool = False) -> None:
    """VLANs of a bridge port: ``pvid`` untagged access VLAN, or tagged ``trunk`` VLANs.

    With ``remove_default`` the VLANs the kernel gave the port on enslaving (the bridge's
    default PVID, 1) are removed first, so the port only sees the VLANs asked for.
    """
    with rtnl() as ipr:
        idx = _require(ipr, port)
        if remove_default:
            for vid in _port_vlans(ipr, idx):
                with kernel_op(f"failed to remove default vlan {vid} from {port!r}"):
                    ipr.vlan_filter("del", index=idx, vlan_info={"vid": vid})
        if pvid:
            with kernel_op(f"failed to set vlan {pvid} on {port!r}"):
                ipr.vlan_filter("add", index=idx, vlan_info={
                    "vid": pvid, "flags": BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED})
        for vid in trunk:
            with kernel_op(f"failed to add trunk vlan {vid} to {port!r}"):
                ipr.vlan_filter("add", index=idx, vlan_info={"vid": vid})


def _port_vlans(ipr: object, index: int) -> list[int]:
    vids: list[int] = []
    for msg in ipr.get_vlans():  # type: ignore[attr-defined]
        if msg["index"] != index:
            continue
        spec = msg.get("IFLA_AF_SPEC")
        if spec is None:
            continue
        for key, value in spec["attrs"]:
            if key == "IFLA_BRIDGE_VLAN_INFO":
                vids.append(int(value["vid"]))
    return vids


def bridge_ports(bridge: str) -> list[str]:
    """The names of the links enslaved to ``bridge`` (none if it does not exist)."""
    info = link_info(bridge)
    if info is None:
        return []
    return [link.name for link in list_links() if link.master == info.index]


def vlan_users(bridge: str, vlan: int, *, exclude: frozenset[str] = frozenset()) -> list[str]:
    """The ports of ``bridge`` (other than ``exclude``) that carry ``vlan``, tagged or not."""
    with rtnl() as ipr:
        return [port for port in bridge_ports(bridge)
                if port not in exclude and (idx := index_of(ipr, port)) is not None
                and vlan in _port_vlans(ipr, idx)]


def bridge_problem(name: str) -> str | None:
    """Why ``name`` cannot serve as a bridge right now (None: it is one, or can be made)."""
    info = link_info(name)
    if info is None:
        return None
    if info is not None and info.kind != "bridge":
        return f"{name!r} exists but is a {info.kind or 'non-bridge'} link, not a bridge"
    return None
