"""The host-gw backend: a plain route to each peer's pod subnets via its underlay address.

No encapsulation, so every node must be on one link-layer segment with the others: a
peer whose underlay address is in none of this node's directly connected subnets is named
in the report's ``errors`` (use the vxlan backend across routers). The routes carry
pycni's route protocol (``ip route show proto 112``) and a gateway without ``onlink``,
which is how this backend tells its routes from the vxlan backend's and everybody else's.

Peer data: ``{"backend": "host-gw", "underlay": "192.168.77.2"}``. No options::

    {"type": "host-gw"}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ... import host
from ...host import RouteInfo
from .._base import NodeRecord, PeerData
from ._base import (
    BadPeerError,
    LocalNode,
    ReconcileReport,
    ReportBuilder,
    SetUpBackend,
    WantedRoute,
    check_peer,
    peer_address,
    sync_routes,
)


def _owned(route: RouteInfo) -> bool:
    return route.protocol == host.RTPROT_PYCNI and route.gateway is not None \
        and not route.onlink


class HostGwBackend(SetUpBackend):
    """The host-gw backend (see the module docstring)."""

    name: ClassVar[str] = "host-gw"
    options: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HostGwBackend:  # noqa: ARG003
        """Built from (validated, empty) ``backend`` options."""
        return cls()

    def setup(self, local: LocalNode) -> PeerData:
        """Check the underlay device exists; the peer data to publish."""
        host.require_link(local.underlay_device)
        self._local = local
        return {"backend": self.name, "underlay": str(local.underlay_address)}

    def reconcile(self, peers: Mapping[str, NodeRecord]) -> ReconcileReport:
        """Make this backend's routes match ``peers`` (level-driven)."""
        report = ReportBuilder()
        family = self.local.underlay_address.version
        routes: list[WantedRoute] = []
        taken: list[Any] = []
        for name in sorted(peers):
            record = peers[name]
            try:
                check_peer(record, self.name, self.local, taken)
                underlay = peer_address(record, family)
            except BadPeerError as exc:
                report.skipped[name] = str(exc)
                continue
            device = host.connected_device(underlay)
            if device is None:
                report.error(name, f"underlay address {underlay} is not on-link: no directly "
                                   f"connected subnet of this node holds it (host-gw needs "
                                   f"all nodes on one segment; use the vxlan backend)")
                continue
            for subnet in record.subnets:
                if subnet.version != family:
                    report.error(name, f"cannot route IPv{subnet.version} subnet {subnet} "
                                       f"via IPv{family} underlay address {underlay}")
                    continue
                routes.append(WantedRoute(name, subnet, underlay, device))
        sync_routes(routes, _owned, report, remove=True)
        return report.build()

    def teardown(self) -> None:
        """Delete every route this backend made."""
        for family in (4, 6):
            for route in host.list_routes(family):
                if not _owned(route) or route.oif is None:
                    continue
                link = host.link_by_index(route.oif)
                if link is not None:
                    host.del_route(route.dst, ifname=link.name, gateway=route.gateway,
                                   missing_ok=True)
