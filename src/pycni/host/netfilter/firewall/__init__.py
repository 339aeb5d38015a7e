"""Forward-filter backends of the firewall plugin: ``iptables`` and ``nftables``."""

from ._base import (
    POLICIES,
    POLICY_ISOLATED,
    POLICY_OPEN,
    POLICY_SAME_BRIDGE,
    Attachment,
    FirewallBackend,
)
from .iptables import IptablesBackend
from .nftables import NftablesBackend

#: ``backend`` value -> implementation.
BACKENDS: dict[str, type[FirewallBackend]] = {
    "iptables": IptablesBackend,
    "nftables": NftablesBackend,
}

__all__ = [
    "BACKENDS",
    "POLICIES",
    "POLICY_ISOLATED",
    "POLICY_OPEN",
    "POLICY_SAME_BRIDGE",
    "Attachment",
    "FirewallBackend",
    "IptablesBackend",
    "NftablesBackend",
]
