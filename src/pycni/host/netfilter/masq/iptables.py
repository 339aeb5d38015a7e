"""Masquerade with iptables/ip6tables, in the reference plugins' layout.

Per attachment and address family, in the ``nat`` table::

    -A POSTROUTING -s <container ip>/32 -m comment --comment C -j CNI-<hash>
    -A CNI-<hash> -d <container subnet> -m comment --comment C -j ACCEPT
    -A CNI-<hash> ! -d 224.0.0.0/4 -m comment --comment C -j MASQUERADE   (ff00::/8 for v6)

with C = ``name: "<network>" id: "<container id>"``. The chain is keyed on network and
container id only (as upstream's: the ifname is not part of it).

Every change is one ``iptables-restore --noflush`` batch made from one ``iptables-save``
(see :mod:`pycni.host.netfilter._xtables`). A new chain is declared with ``:CHAIN``, which in a
noflush batch would empty an existing one, so only missing chains are declared.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import ClassVar

from .._xtables import (
    COMMENT_MAX,
    NatTable,
    families,
    nat_chains,
    option,
    rule_line,
    transact_nat,
)
from ._base import MULTICAST, IPInterface, chain_comment, chain_name

_OUR_CHAIN = re.compile(r"^CNI-[0-9a-f]{24}$")
_COMMENT = re.compile(r'^name: "((?:[^"\\]|\\.)*)" id: "((?:[^"\\]|\\.)*)"$')
_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _go_unquote(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 >= len(text):
            out.append(ch)
            i += 1
            continue
        esc = text[i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(esc)
        if width is not None:
            out.append(chr(int(text[i + 2:i + 2 + width], 16)))
            i += 2 + width
        else:
            out.append(_GO_ESCAPES.get(esc, esc))
            i += 2
    return "".join(out)


def parse_comment(comment: str) -> tuple[str, str] | None:
    """(network, container id) from a reference-format chain comment, else None."""
    m = _COMMENT.match(comment)
    if m is None:
        return None
    try:
        return _go_unquote(m.group(1)), _go_unquote(m.group(2))
    except ValueError:
        return None


def _rule_args(ip: IPInterface, comment: str) -> tuple[list[str], list[str]]:
    """(the ACCEPT rule for ip's subnet, the POSTROUTING jump for ip) without -j target."""
    accept = ["-d", str(ip.network), "-m", "comment", "--comment", comment]
    jump = ["-s", f"{ip.ip}/{ip.max_prefixlen}", "-m", "comment", "--comment", comment]
    return accept, jump


class IPTablesMasq:
    """The ``iptables`` backend (iptables-nft or legacy, whichever the system provides)."""

    name: ClassVar[str] = "iptables"

    @classmethod
    def available(cls) -> bool:
        """True if iptables-save/-restore are installed (ip6tables ones are checked on use)."""
        return 4 in families()

    def setup(self, network: str, container_id: str, ifname: str,  # noqa: ARG002 - upstream keys iptables chains on network+id only
              ips: Sequence[IPInterface]) -> None:
        """Add whatever of this attachment's chain, rules and jumps is missing, per family.

        Additive, like upstream's AppendUnique: the chain is shared by every ifname of the
        container on this network, so rules for addresses not in ``ips`` may belong to a
        sibling interface and are left alone (teardown removes the whole chain).
        """
        chain = chain_name(network, container_id)
        comment = chain_comment(network, container_id)

        def plan(family: int, mine: list[IPInterface], table: NatTable) -> list[str]:
            # Copies: the caller applies the lines to ``table`` (a merged batch).
            existing = list(table.rules.get(chain, []))
            postrouting = list(table.rules.get("POSTROUTING", []))
            masquerade = ["!", "-d", str(MULTICAST[family]), "-m", "comment", "--comment",
                          comment, "-j", "MASQUERADE"]
            lines = [] if chain in table.chains else [f":{chain} - [0:0]"]
            for ip in mine:
                accept, jump = _rule_args(ip, comment)
                accept += ["-j", "ACCEPT"]
                jump += ["-j", chain]
                # Every subnet's ACCEPT goes before the MASQUERADE: upstream appends per
                # address, which leaves a second subnet's ACCEPT where it never matches.
                if accept not in existing:
                    existing.append(accept)
                    lines.append(rule_line("-I", chain, ["1", *accept]))
                if jump not in postrouting:
                    postrouting.append(jump)
                    lines.append(rule_line("-A", "POSTROUTING", jump))
            if masquerade not in existing:
                lines.append(rule_line("-A", chain, masquerade))
            return lines

        for family in (4, 6):
            mine = [ip for ip in ips if ip.version == family]
            if mine:
                transact_nat(family, functools.partial(plan, family, mine),
                             f"set up masquerading chain {chain} for {container_id}",
                             new_chain=chain)

    @staticmethod
    def _removal(table: NatTable, chains: list[str]) -> list[str]:
        """Restore lines deleting ``chains`` and every POSTROUTING jump to them."""
        lines: list[str] = []
        for chain in chains:
            lines += [rule_line("-D", "POSTROUTING", r) for r in table.jumps_to(chain)]
        for chain in chains:
            if chain in table.chains:
                lines += [f"-F {chain}", f"-X {chain}"]
        return lines

    def teardown(self, network: str, container_id: str, ifname: str) -> None:  # noqa: ARG002
        """Remove the attachment's POSTROUTING jumps (any source) and its chain, both families."""
        chain = chain_name(network, container_id)
        for family in families():
            known = nat_chains(family)
            if known is not None and chain not in known:
                continue  # no chain, so no jump to it either (iptables refuses dangling jumps)
            transact_nat(family, functools.partial(self._removal, chains=[chain]),
                           f"remove masquerading chain {chain} for {container_id}")

    def gc(self, network: str, valid: frozenset[tuple[str, str]]) -> None:
        """Remove chains of ``network`` (found by their comments) whose container is gone.

        A comment cut to iptables' 255 bytes (a long container ID) no longer names the
        container: such a chain of ``network`` is stale unless a valid ID hashes to its name.
        """
        valid_ids = {cid for cid, _ in valid}
        keep = {chain_name(network, cid) for cid in valid_ids}

        def plan(table: NatTable) -> list[str]:
            stale = []
            for chain in sorted(table.chains):
                if not _OUR_CHAIN.match(chain):
                    continue
                owner = self._owner(table, chain)
                if owner is not None:
                    if owner[0] == network and owner[1] not in valid_ids:
                        stale.append(chain)
                elif chain not in keep and self._cut_comment_of(table, chain, network):
                    stale.append(chain)
            return self._removal(table, stale)

        for family in families():
            transact_nat(family, plan,
                           f"garbage-collect masquerading chains of network {network!r}")

    @staticmethod
    def _owner(table: NatTable, chain: str) -> tuple[str, str] | None:
        """(network, container id) of a chain whose rules carry a matching comment."""
        for rule in [*table.rules.get(chain, []), *table.jumps_to(chain)]:
            comment = option(rule, "--comment")
            owner = parse_comment(comment) if comment else None
            if owner is not None and chain_name(*owner) == chain:
                return owner
        return None


    @staticmethod
    def _cut_comment_of(table: NatTable, chain: str, network: str) -> bool:
        """True if the chain's rules carry a comment of ``network`` cut to COMMENT_MAX bytes."""
        head = chain_comment(network, "")[:-1]  # 'name: "<network>" id: "'
        for rule in [*table.rules.get(chain, []), *table.jumps_to(chain)]:
            comment = option(rule, "--comment") or ""
            if len(comment.encode()) == COMMENT_MAX and (comment.startswith(head)
                                                         or head.startswith(comment)):
                return True
        return False


# Kept under their old names for modules that import them from here (portmap).
_line = rule_line
_option = option

__all__ = ["IPTablesMasq", "NatTable", "parse_comment"]
