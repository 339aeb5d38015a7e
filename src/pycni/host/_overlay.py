"""Kernel pieces of the cluster backends: a VXLAN device, its neighbour and FDB entries.

The vxlan backend follows flannel's layout: one VXLAN device per node, created without a
remote or group address and with learning off, so the kernel never floods or learns: every
peer is programmed by hand with

- a permanent neighbour entry, peer VTEP address -> peer VTEP MAC
  (``ip neigh replace 10.244.2.0 lladdr <mac> dev pycni.1 nud permanent``), so the inner
  Ethernet frame gets its destination MAC without ARP;
- a permanent FDB entry, peer VTEP MAC -> peer underlay address
  (``bridge fdb replace <mac> dev pycni.1 dst 192.168.77.3 self permanent``), so the device
  knows where to send the encapsulated packet;
- an on-link route, peer pod subnet via peer VTEP address
  (``ip route replace 10.244.2.0/24 via 10.244.2.0 dev pycni.1 onlink``).

The routes go through :func:`replace_route` in ``_route`` with :data:`RTPROT_PYCNI`, which
is how a backend tells its routes from everybody else's.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..spec import IPAddress, IPInterface, KernelError
from .links import LinkInfo, _require, index_of, kernel_op, link_by_index, link_info, rtnl

#: Bytes VXLAN adds to each packet: outer IPv4 (20) or IPv6 (40) header, UDP (8), VXLAN (8)
#: and the inner Ethernet header (14).
VXLAN_OVERHEAD = {4: 50, 6: 70}

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class Neighbour:
    """A permanent neighbour (ARP/NDP) entry: ``ip`` answers at ``mac``."""

    ip: IPAddress
    mac: str


@dataclass(frozen=True)
class FdbEntry:
    """A permanent FDB entry of a VXLAN device: frames to ``mac`` go to underlay ``dst``."""

    mac: str
    dst: IPAddress


def _vxlan_wanted(vni: int, port: int, local: IPAddress, underlay_index: int
                  ) -> dict[str, Any]:
    return {"IFLA_VXLAN_ID": vni, "IFLA_VXLAN_PORT": port,
            "IFLA_VXLAN_LOCAL6" if local.version == 6 else "IFLA_VXLAN_LOCAL": str(local),
            "IFLA_VXLAN_LINK": underlay_index, "IFLA_VXLAN_LEARNING": 0}


def vxlan_differences(info: LinkInfo, *, vni: int, port: int, local: IPAddress,
                      underlay_index: int) -> list[str]:
    """What makes the link ``info`` differ from the wanted VXLAN device (empty: nothing)."""
    if info.kind != "vxlan":
        return [f"kind is {info.kind or 'unknown'!r}, not 'vxlan'"]
    out = []
    for key, want in _vxlan_wanted(vni, port, local, underlay_index).items():
        have = info.data.get(key)
        if isinstance(want, str) and have is not None:
            have = str(ipaddress.ip_address(have))
        if have != want:
            out.append(f"{key.removeprefix('IFLA_VXLAN_').lower()} is {have!r}, "
                       f"expected {want!r}")
    return out


def ensure_vxlan(name: str, *, vni: int, port: int, local: IPAddress, underlay_device: str,
                 mtu: int = 0, mac: str = "") -> LinkInfo:
    """The VXLAN device ``name``, created or fixed, and up.

    ``mtu`` 0 means the underlay device's MTU minus :data:`VXLAN_OVERHEAD`. A device with
    another VNI, port, local address or underlay device is deleted and made again (those
    cannot be changed in place); a wrong MTU or MAC is set in place.
    """
    with rtnl() as ipr:
        under_info = link_info(underlay_device)
        if under_info is None:
            raise KernelError(f"underlay device {underlay_device!r} not found")
        if not mtu:
            mtu = under_info.mtu - VXLAN_OVERHEAD[local.version]
        found = link_info(name)
        if found is not None:
            problems = vxlan_differences(found, vni=vni, port=port, local=local,
                                         underlay_index=under_info.index)
            if problems:
                with kernel_op(f"failed to delete link {name!r} ({'; '.join(problems)})",
                               ok=(errno.ENODEV,)):
                    ipr.link("del", index=found.index)
                found = None
        if found is None:
            req: dict[str, Any] = {
                "ifname": name, "kind": "vxlan", "vxlan_id": vni, "vxlan_port": port,
                "vxlan_link": under_info.index, "vxlan_learning": 0, "mtu": mtu,
                ("vxlan_local6" if local.version == 6 else "vxlan_local"): str(local)}
            if mac:
                req["address"] = mac
            with kernel_op(f"failed to create vxlan link {name!r} (VNI {vni}, port {port}, "
                           f"local {local} dev {underlay_device})"):
                ipr.link("add", **req)
            found = link_info(name)
            if found is None:
                raise KernelError(f"vxlan link {name!r} vanished after it was created")
        info = found
        changes: dict[str, Any] = {}
        if info.mtu != mtu:
            changes["mtu"] = mtu
        if mac and info.mac != mac.lower():
            changes["address"] = mac
        if not info.up:
            changes["state"] = "up"
        if changes:
            with kernel_op(f"failed to set {', '.join(sorted(changes))} of {name!r}"):
                ipr.link("set", index=info.index, **changes)
            refreshed = link_by_index(info.index)
            if refreshed is None:
                raise KernelError(f"vxlan link {name!r} vanished while it was set up")
            info = refreshed
        return info


def ensure_addresses(ifname: str, wanted: Iterable[IPInterface]) -> None:
    """Make ``wanted`` the global addresses of ``ifname``: add the missing, remove others.

    IPv6 addresses are added with ``nodad``: a VTEP address is unique by construction (the
    network address of the node's own subnet), and DAD would hold it back for seconds.
    """
    want = set(wanted)
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to list addresses of {ifname!r}"):
            msgs = ipr.get_addr(index=idx)
        have = set()
        for msg in msgs:
            if int(msg["scope"]) != 0:  # link-local (fe80::) and host scope stay
                continue
            have.add(ipaddress.ip_interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}"))
        for addr in sorted(have - want, key=str):
            with kernel_op(f"failed to remove address {addr} from {ifname!r}",
                           ok=(errno.EADDRNOTAVAIL,)):
                ipr.addr("del", index=idx, address=str(addr.ip),
                         prefixlen=addr.network.prefixlen)
        for addr in sorted(want - have, key=str):
            kwargs: dict[str, Any] = {"index": idx, "address": str(addr.ip),
                                      "prefixlen": addr.network.prefixlen}
            if addr.version == 6:
                kwargs["flags"] = IFA_F_NODAD
            with kernel_op(f"failed to add address {addr} to {ifname!r}", ok=(errno.EEXIST,)):
                ipr.addr("add", **kwargs)


def _family(ip: IPAddress) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def list_neighbours(ifname: str) -> list[Neighbour]:
    """The permanent neighbour entries (IPv4 and IPv6) on ``ifname``."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            with kernel_op(f"failed to list neighbours of {ifname!r}"):
                msgs = ipr.get_neighbours(family=family, ifindex=idx)
            for msg in msgs:
                mac = msg.get("NDA_LLADDR")
                if int(msg["ifindex"]) != idx or not int(msg["state"]) & NUD_PERMANENT \
                        or not mac:
                    continue
                out.append(Neighbour(ipaddress.ip_address(msg.get("NDA_DST")), str(mac).lower()))
        return out


def replace_neighbour(ifname: str, entry: Neighbour, *, index: int | None = None) -> None:
    """``ip neigh replace <ip> lladdr <mac> dev <ifname> nud permanent``.

    ``index``: the ifindex of ``ifname`` when the caller knows it (a reconcile of many
    entries looks the device up once instead of once per entry).
    """
    with rtnl() as ipr:
        idx = index if index is not None else _require(ipr, ifname)
        with kernel_op(f"failed to set neighbour {entry.ip} lladdr {entry.mac} on {ifname!r}"):
            ipr.neigh("replace", family=_family(entry.ip), ifindex=idx, dst=str(entry.ip),
                      lladdr=entry.mac, state=NUD_PERMANENT)


def delete_neighbour(ifname: str, ip: IPAddress, *, index: int | None = None) -> None:
    """Remove the neighbour entry of ``ip`` on ``ifname`` (ifindex ``index`` when known);
    a missing one is fine."""
    with rtnl() as ipr:
        idx = index if index is not None else index_of(ipr, ifname)
        if idx is None:
            return
        with kernel_op(f"failed to delete neighbour {ip} on {ifname!r}",
                       ok=(errno.ENOENT, errno.ESRCH)):
            ipr.neigh("del", family=_family(ip), ifindex=idx, dst=str(ip))


def list_fdb(ifname: str) -> list[FdbEntry]:
    """The permanent FDB entries with a remote (``dst``) on the VXLAN device ``ifname``."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to list the FDB of {ifname!r}"):
            msgs = ipr.get_neighbours(family=socket.AF_BRIDGE, ifindex=idx)
        out = []
        for msg in msgs:
            dst = msg.get("NDA_DST")
            if int(msg["ifindex"]) != idx or dst is None \
                    or not int(msg["state"]) & NUD_PERMANENT:
                continue
            out.append(FdbEntry(str(msg.get("NDA_LLADDR")).lower(), ipaddress.ip_address(dst)))
        return out


def replace_fdb(ifname: str, entry: FdbEntry, *, index: int | None = None) -> None:
    """``bridge fdb replace <mac> dev <ifname> dst <dst> self permanent`` (``index``: the
    ifindex of ``ifname`` when known).

    Replace rather than append: for a MAC the device already knows, the kernel swaps the
    remote in one step, so a peer that moved to a new underlay address never has two.
    """
    with rtnl() as ipr:
        idx = index if index is not None else _require(ipr, ifname)
        with kernel_op(f"failed to set FDB entry {entry.mac} dst {entry.dst} on {ifname!r}"):
            ipr.fdb("replace", ifindex=idx, lladdr=entry.mac, dst=str(entry.dst),
                    state=NUD_PERMANENT, flags=NTF_SELF)


def delete_fdb(ifname: str, entry: FdbEntry, *, index: int | None = None) -> None:
    """Remove one FDB entry (MAC and remote) from ``ifname`` (ifindex ``index`` when known);
    a missing one is fine."""
    with rtnl() as ipr:
        idx = index if index is not None else index_of(ipr, ifname)
        if idx is None:
            return
        with kernel_op(f"failed to delete FDB entry {entry.mac} dst {entry.dst} on {ifname!r}",
                       ok=(errno.ENOENT, errno.ESRCH)):
            ipr.fdb("del", ifindex=idx, lladdr=entry.mac, dst=str(entry.dst),
                    state=NUD_PERMANENT, flags=NTF_SELF)
