"""What a firewall backend is given and must do."""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from typing import Any, Protocol

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: ``ingressPolicy`` values: upstream's two, and ``isolated`` (ours).
POLICY_OPEN = "open"
POLICY_SAME_BRIDGE = "same-bridge"
POLICY_ISOLATED = "isolated"
POLICIES = (POLICY_OPEN, POLICY_SAME_BRIDGE, POLICY_ISOLATED)


@dataclass(frozen=True)
class Attachment:
    """One container interface's firewall inputs (from the config and prevResult)."""

    network: str
    container_id: str
    ifname: str
    ips: tuple[IPInterface, ...]
    ingress_policy: str = POLICY_OPEN
    bridge: str = ""
    admin_chain: str = ""

    def to_json(self) -> dict[str, Any]:
        """The form kept on disk for GC."""
        return {"network": self.network, "containerID": self.container_id,
                "ifname": self.ifname, "ips": [str(i) for i in self.ips],
                "ingressPolicy": self.ingress_policy, "bridge": self.bridge,
                "adminChain": self.admin_chain}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Attachment:
        """Read what :meth:`to_json` wrote."""
        return cls(network=str(obj["network"]), container_id=str(obj["containerID"]),
                   ifname=str(obj["ifname"]),
                   ips=tuple(ipaddress.ip_interface(i) for i in obj.get("ips", [])),
                   ingress_policy=str(obj.get("ingressPolicy", POLICY_OPEN)),
                   bridge=str(obj.get("bridge", "")), admin_chain=str(obj.get("adminChain", "")))

    def host_ips(self, version: int) -> list[str]:
        """The addresses of one family as single-host prefixes (``/32``, ``/128``)."""
        return [f"{i.ip}/{i.max_prefixlen}" for i in self.ips if i.version == version]


class FirewallBackend(Protocol):
    """A way to program the forward filter: ``iptables`` or ``nftables``."""

    name: str

    def add(self, att: Attachment) -> None:
        """Allow the attachment's traffic and apply its ingress policy (idempotent)."""

    def delete(self, att: Attachment) -> None:
        """Remove the attachment's rules; missing rules are fine."""

    def check(self, att: Attachment) -> None:
        """Raise KernelError naming the first missing chain or rule."""

    def unavailable(self) -> str | None:
        """Why this backend cannot work here (missing tool), or None."""


def missing_tool(name: str) -> str | None:
    """A reason string if executable ``name`` is not in PATH."""
    return None if shutil.which(name) else f"{name} is not installed (not found in PATH)"
