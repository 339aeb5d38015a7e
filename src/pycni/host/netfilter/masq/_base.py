"""The masquerade backend Protocol and the names that identify one attachment's rules.

An attachment is (network, container id, ifname). Both backends derive every table object
they write from that identity, the way the reference plugins do, so rules written by the Go
plugins and by pycni are found and removed by either:

- iptables: a chain ``CNI-`` + 24 hex digits of sha512(network + container id) and the
  comment ``name: "<network>" id: "<container id>"`` (Go ``%q`` quoting) on every rule, cut
  to the 255 bytes iptables keeps (the reference passes a long one whole, and iptables cuts
  it to the same 255 bytes).
- nftables: one rule per address in ``inet cni_plugins_masquerade`` chain ``masq_checks``
  whose comment starts with ``<16 hex of sha512(network)>-<16 hex of sha512(ifname:id)>``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import ClassVar, Protocol

from .._names import hash_with_prefix
from .._xtables import stored_comment

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: iptables chain names are at most 28 characters (the kernel's XT_EXTENSION_MAXNAMELEN
#: less room); the reference plugins fill them exactly.
CHAIN_NAME_LEN = 28
CHAIN_PREFIX = "CNI-"

#: v4 and v6 multicast: pods may talk multicast on their own link, never masqueraded.
MULTICAST = {4: ipaddress.ip_network("224.0.0.0/4"), 6: ipaddress.ip_network("ff00::/8")}


def chain_name(network: str, container_id: str) -> str:
    """The per-attachment iptables chain (``CNI-`` + 24 hex digits)."""
    return hash_with_prefix(CHAIN_NAME_LEN, CHAIN_PREFIX, network + container_id)


def go_quote(text: str) -> str:
    """``text`` quoted as Go's ``%q`` does (the reference plugins' comment format)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def chain_comment(network: str, container_id: str) -> str:
    """The comment on every iptables rule of an attachment, as iptables stores it."""
    return stored_comment(f"name: {go_quote(network)} id: {go_quote(container_id)}")


class MasqBackend(Protocol):
    """One way of writing masquerade rules; instances are cheap and stateless.

    Every method acts on the calling thread's network namespace.
    """

    name: ClassVar[str]

    @classmethod
    def available(cls) -> bool:
        """True if the tools this backend needs are installed."""
        ...

    def setup(self, network: str, container_id: str, ifname: str,
              ips: Sequence[IPInterface]) -> None:
        """Masquerade traffic from each of ``ips`` to anything outside its subnet.

        Replaces whatever this attachment had before (setup twice is setup once).
        """
        ...

    def teardown(self, network: str, container_id: str, ifname: str) -> None:
        """Remove every rule of this attachment; nothing to remove is success."""
        ...

    def gc(self, network: str, valid: frozenset[tuple[str, str]]) -> None:
        """Remove the rules of ``network`` whose (container id, ifname) is not in ``valid``."""
        ...
