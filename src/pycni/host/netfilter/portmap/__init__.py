"""Host port mapping (DNAT from host ports to a container) for the ``portmap`` plugin.

Two backends: ``nftables`` (tables ``ip``/``ip6 cni_hostport``, one transaction per call)
and ``iptables`` (the reference plugin's ``CNI-HOSTPORT-*`` / ``CNI-DN-*`` chains). Both
find an attachment's rules from (network, container id, ifname) alone. Plus the two kernel
chores around them: ``route_localnet`` for connections from 127.0.0.1, and deleting stale
UDP conntrack entries of the mapped host ports.

Every function acts on the calling thread's network namespace (the plugin's host netns).
"""

from __future__ import annotations

from .._conntrack import delete_by_dst_port
from ._base import (
    PROTOCOLS,
    IPInterface,
    Owner,
    PortMapBackend,
    PortMapping,
    PortMapSpec,
    network_tag,
    owner_comment,
)
from ._localnet import enable_route_localnet, route_ifname
from .iptables import IPTablesPortMap
from .nftables import NFTablesPortMap

#: The port-mapping backends by their ``backend`` config name.
BACKENDS: dict[str, type[PortMapBackend]] = {
    "iptables": IPTablesPortMap,
    "nftables": NFTablesPortMap,
}


def flush_udp_conntrack(family: int, host_ports: list[int]) -> None:
    """Delete conntrack entries of UDP flows to ``host_ports`` (stale since before DNAT)."""
    for port in sorted(set(host_ports)):
        delete_by_dst_port(family, "udp", port)


__all__ = [
    "BACKENDS",
    "PROTOCOLS",
    "IPInterface",
    "IPTablesPortMap",
    "NFTablesPortMap",
    "Owner",
    "PortMapBackend",
    "PortMapSpec",
    "PortMapping",
    "enable_route_localnet",
    "flush_udp_conntrack",
    "network_tag",
    "owner_comment",
    "route_ifname",
]
