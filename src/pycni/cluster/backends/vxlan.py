"""The vxlan backend: the nodes' pod subnets over a VXLAN overlay, flannel's layout.

One VXLAN device per node (``pycni.1`` for VNI 1), no remote or group, learning off, MTU
the underlay's minus 50 (70 over IPv6). Each node's VTEP address is the network address
of its pod subnet (``10.244.1.0/32`` for ``10.244.1.0/24``; IPv6 subnets get theirs as a
/128 on the same device: the inner family does not depend on the underlay's). Per peer:
a permanent neighbour entry (VTEP address -> VTEP MAC), a permanent FDB entry (VTEP MAC ->
underlay address) and an on-link route per subnet via its VTEP address.

Peer data: ``{"backend": "vxlan", "underlay": "192.168.77.2", "vtepMAC": "0e:...",
"vni": 1, "port": 8472}``. Options (config ``"backend"``)::

    {"type": "vxlan", "vni": 1, "port": 8472, "mtu": 1450, "device": "pycni.1"}
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ... import host
from ...host import FdbEntry, Neighbour, RouteInfo
from ...spec import InvalidNetworkConfig, IPAddress, KernelError, ifname_problem
from .._base import NodeRecord, PeerData
from ._base import (
    BadPeerError,
    LocalNode,
    ReconcileReport,
    ReportBuilder,
    SetUpBackend,
    WantedRoute,
    check_peer,
    int_option,
    peer_address,
    sync_routes,
)

#: flannel's defaults: VNI 1 and the Linux kernel's VXLAN port (IANA's is 4789).
DEFAULT_VNI = 1
DEFAULT_PORT = 8472

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def vtep_mac(node: str, vni: int) -> str:
    """A stable, locally administered unicast MAC for ``node``'s VTEP on ``vni``.

    Derived rather than random, so a device made again (after a reboot, or a VNI change
    and back) keeps the MAC its peers already programmed.
    """
    digest = bytearray(hashlib.sha256(f"pycni-vtep/{node}/{vni}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


class VxlanBackend(SetUpBackend):
    """The vxlan backend (see the module docstring)."""

    name: ClassVar[str] = "vxlan"
    options: ClassVar[frozenset[str]] = frozenset({"vni", "port", "mtu", "device"})

    def __init__(self, *, vni: int = DEFAULT_VNI, port: int = DEFAULT_PORT, mtu: int = 0,
                 device: str = "") -> None:
        self.vni = vni
        self.port = port
        self.mtu = mtu
        self.device = device or f"pycni.{vni}"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> VxlanBackend:
        """Built from validated ``backend`` options (unknown keys are checked by the caller)."""
        vni = int_option(options, "vni", DEFAULT_VNI, low=1, high=2**24 - 1,
                         what="a VXLAN network id")
        port = int_option(options, "port", DEFAULT_PORT, low=1, high=65535, what="a UDP port")
        mtu = int_option(options, "mtu", 0, low=0, high=65535,
                         what="the VXLAN device's MTU (0: the underlay's minus 50)")
        if 0 < mtu < 68:
            raise InvalidNetworkConfig(
                f'invalid "backend.mtu": expected 0 or at least 68 (IPv4\'s minimum), got {mtu}')
        device = options.get("device", f"pycni.{vni}")
        if not isinstance(device, str) or ifname_problem(device) is not None:
            raise InvalidNetworkConfig(
                f'invalid "backend.device": expected an interface name (1-15 characters, no '
                f'"/", ":" or spaces), got {device!r}')
        return cls(vni=vni, port=port, mtu=mtu, device=device)

    def setup(self, local: LocalNode) -> PeerData:
        """Create or fix the VXLAN device and its VTEP addresses; the peer data to publish."""
        mac = vtep_mac(local.name, self.vni)
        host.ensure_vxlan(self.device, vni=self.vni, port=self.port,
                          local=local.underlay_address, underlay_device=local.underlay_device,
                          mtu=self.mtu, mac=mac)
        host.ensure_addresses(self.device, [
            ipaddress.ip_interface(f"{s.network_address}/{s.max_prefixlen}")
            for s in local.subnets])
        self._local = local
        return {"backend": self.name, "underlay": str(local.underlay_address),
                "vtepMAC": mac, "vni": self.vni, "port": self.port}

    def _peer(self, record: NodeRecord, taken: list[Any]) -> tuple[IPAddress, str]:
        check_peer(record, self.name, self.local, taken)
        underlay = peer_address(record, self.local.underlay_address.version)
        mac = record.peer.get("vtepMAC")
        if not isinstance(mac, str) or not _MAC.match(mac.lower()):
            raise BadPeerError(f'"vtepMAC" must be a MAC like 0e:12:34:56:78:9a, got {mac!r}')
        if int(mac[:2], 16) & 1:
            raise BadPeerError(f'"vtepMAC" {mac} is a multicast MAC')
        for key, mine in (("vni", self.vni), ("port", self.port)):
            theirs = record.peer.get(key, mine)
            if theirs != mine:
                raise BadPeerError(f'peer uses {key} {theirs!r}, this node uses {mine}')
        return underlay, mac.lower()

    def reconcile(self, peers: Mapping[str, NodeRecord]) -> ReconcileReport:
        """Make the device's neighbours, FDB and routes match ``peers`` (level-driven)."""
        report = ReportBuilder()
        dev = self.device
        neigh: dict[IPAddress, tuple[str, str]] = {}
        fdb: dict[str, tuple[str, IPAddress]] = {}
        routes: list[WantedRoute] = []
        taken: list[Any] = []
        for name in sorted(peers):
            record = peers[name]
            try:
                underlay, mac = self._peer(record, taken)
            except BadPeerError as exc:
                report.skipped[name] = str(exc)
                continue
            fdb[mac] = (name, underlay)
            for subnet in record.subnets:
                vtep = subnet.network_address
                neigh[vtep] = (name, mac)
                routes.append(WantedRoute(name, subnet, vtep, dev, onlink=True))
        # Neighbour and FDB entries first, so a new route never sends into a hole.
        self._sync_fdb(fdb, report)
        self._sync_neighbours(neigh, report)
        index = host.require_link(dev).index

        def owned(route: RouteInfo) -> bool:
            return route.oif == index and route.protocol == host.RTPROT_PYCNI

        sync_routes(routes, owned, report, remove=True)
        # Entries of peers that left go after their routes.
        self._sync_fdb(fdb, report, remove=True)
        self._sync_neighbours(neigh, report, remove=True)
        return report.build()

    def _sync_neighbours(self, wanted: Mapping[IPAddress, tuple[str, str]],
                         report: ReportBuilder, *, remove: bool = False) -> None:
        dev = self.device
        index = host.require_link(dev).index  # once, not once per entry
        actual = {n.ip: n.mac for n in host.list_neighbours(dev)}
        if remove:
            for ip in sorted(actual.keys() - wanted.keys(), key=str):
                host.delete_neighbour(dev, ip, index=index)
                report.removed.append(f"neighbour {ip} lladdr {actual[ip]} dev {dev}")
            return
        for ip, (peer, mac) in wanted.items():
            if actual.get(ip) == mac:
                continue
            try:
                host.replace_neighbour(dev, Neighbour(ip, mac), index=index)
            except KernelError as exc:
                report.error(peer, str(exc))
                continue
            (report.replaced if ip in actual else report.added).append(
                f"neighbour {ip} lladdr {mac} dev {dev}")

    def _sync_fdb(self, wanted: Mapping[str, tuple[str, IPAddress]], report: ReportBuilder,
                  *, remove: bool = False) -> None:
        dev = self.device
        index = host.require_link(dev).index
        actual = host.list_fdb(dev)
        if remove:
            for entry in actual:
                if wanted.get(entry.mac, ("", None))[1] != entry.dst:
                    host.delete_fdb(dev, entry, index=index)
                    report.removed.append(f"fdb {entry.mac} dst {entry.dst} dev {dev}")
            return
        for mac, (peer, dst) in wanted.items():
            dsts = [e.dst for e in actual if e.mac == mac]
            if dst in dsts:
                continue
            try:
                host.replace_fdb(dev, FdbEntry(mac, dst), index=index)
            except KernelError as exc:
                report.error(peer, str(exc))
                continue
            (report.replaced if dsts else report.added).append(
                f"fdb {mac} dst {dst} dev {dev}")

    def teardown(self) -> None:
        """Delete the VXLAN device; its routes, neighbour and FDB entries go with it."""
        host.delete_link(self.device, missing_ok=True)
