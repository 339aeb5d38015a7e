"""What a port-mapping backend is given, and the Protocol every backend implements.

One attachment (network, container id, ifname) owns its rules; backends find them again by
that identity alone, so DEL and GC need neither the prevResult nor the container's netns.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Layer-4 protocols a mapping may use (CONVENTIONS.md ``portMappings``).
PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Owner:
    """The attachment a set of rules belongs to."""

    network: str
    container_id: str
    ifname: str


@dataclass(frozen=True)
class PortMapping:
    """One ``portMappings`` entry: ``host_ip`` None means every local address."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: IPAddress | None = None

    def applies_to(self, family: int) -> bool:
        """False if ``host_ip`` is of the other family (the mapping is skipped there)."""
        return self.host_ip is None or self.host_ip.version == family

    @property
    def dst_ip(self) -> IPAddress | None:
        """The address to match, or None: an unspecified host IP (0.0.0.0, ::) matches all."""
        if self.host_ip is None or self.host_ip.is_unspecified:
            return None
        return self.host_ip


@dataclass(frozen=True)
class PortMapSpec:
    """Everything one backend call needs for one container address.

    ``container`` keeps its prefix: the iptables backend marks hairpin traffic from the whole
    container subnet, as the reference plugin does. ``mark_bit`` and
    ``external_set_mark_chain`` are read by the iptables backend only.
    """

    owner: Owner
    container: IPInterface
    mappings: tuple[PortMapping, ...]
    snat: bool = True
    masq_all: bool = False
    conditions: tuple[str, ...] = ()
    mark_bit: int = 13
    external_set_mark_chain: str | None = None

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.container.version

    def family_mappings(self) -> list[PortMapping]:
        """The mappings that apply to this address's family, in config order."""
        return [m for m in self.mappings if m.applies_to(self.family)]


_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: nftables keeps at most 128 bytes of a rule comment (NFTNL_UDATA_COMMENT_MAXLEN).
COMMENT_MAX = 128


def _part(text: str) -> str:
    if _SAFE.match(text) and len(text) <= 40:
        return text
    return "#" + hashlib.sha256(text.encode()).hexdigest()[:16]


def network_tag(network: str) -> str:
    """The first field of :func:`owner_comment`: the network name, or a hash if unusual."""
    return _part(network)


def owner_comment(owner: Owner) -> str:
    """``<network>/<ifname>/<container id>``: the comment on every nftables rule of ``owner``.

    A field that is long or holds characters outside ``[A-Za-z0-9_.-]`` is replaced by a
    ``#``-prefixed hash, so the comment always fits and needs no quoting; the mapping is
    deterministic, so DEL and GC can compute it again.
    """
    cid = owner.container_id if _SAFE.match(owner.container_id) else _part(owner.container_id)
    comment = f"{network_tag(owner.network)}/{_part(owner.ifname)}/{cid}"
    if len(comment) > COMMENT_MAX:
        comment = f"{network_tag(owner.network)}/{_part(owner.ifname)}/{_part(cid)}"
    return comment


class PortMapBackend(Protocol):
    """One way of writing port-mapping rules; instances are cheap and stateless.

    Every method acts on the calling thread's network namespace (the plugin's host netns).
    """

    name: ClassVar[str]

    @classmethod
    def available(cls) -> bool:
        """True if the tools this backend needs are installed."""
        ...

    @classmethod
    def parse_conditions(cls, tokens: Sequence[str], family: int, key: str) -> tuple[str, ...]:
        """``conditionsV4``/``V6`` (named ``key``) in this backend's grammar, as the
        backend will write them; InvalidNetworkConfig for anything else."""
        ...

    def forward(self, specs: Sequence[PortMapSpec]) -> None:
        """Write the DNAT and masquerade rules for each spec (one per container address)."""
        ...

    def check(self, specs: Sequence[PortMapSpec]) -> None:
        """Raise KernelError naming what is missing if the rules of ``specs`` are not there."""
        ...

    def unforward(self, owner: Owner) -> None:
        """Remove every rule of ``owner`` in both families; nothing to remove is success."""
        ...

    def gc(self, network: str, valid: frozenset[tuple[str, str]]) -> None:
        """Remove the rules of ``network`` whose (container id, ifname) is not in ``valid``."""
        ...
