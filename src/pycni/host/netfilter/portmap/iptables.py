"""Port mapping with iptables/ip6tables, in the reference plugin's layout (``nat`` table)::

    PREROUTING, OUTPUT:  -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    CNI-HOSTPORT-DNAT:   -p tcp -m comment --comment C -m multiport --dports 8080,8081
                             <conditions> -j CNI-DN-<hash>          (one per protocol, 15 ports)
    CNI-DN-<hash>:       -s <container subnet> -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
                         -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
                         -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
    CNI-HOSTPORT-SETMARK: -j MARK --set-xmark <bit>/<bit>
    POSTROUTING (first): -j CNI-HOSTPORT-MASQ
    CNI-HOSTPORT-MASQ:   -m mark --mark <bit>/<bit> -j MASQUERADE

with C = ``dnat name: "<network>" id: "<container id>"`` and ``<hash>`` from sha512(network +
container id), so DEL finds the chain from the CNI arguments alone. Rules are written in the
form ``iptables-save`` prints them, so CHECK compares text.

Each ADD and DEL is one ``iptables-restore -w --noflush`` batch per family, made from one
``iptables-save``: two processes instead of the reference plugin's one per rule. Shared
chains are created with ``-N``, which fails the whole batch if a concurrent call created
the chain first; the call then reads the table again and retries. The container's entry
rules go to the top of CNI-HOSTPORT-DNAT, so the newest container owning a host port wins.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import ClassVar

from ....spec import KernelError
from .._names import hash_with_prefix
from .._xtables import (
    COMMENT_MAX,
    TOOLS,
    NatTable,
    families,
    nat_chains,
    save_nat,
    stored_comment,
    transact_nat,
)
from .._xtables import option as _option
from .._xtables import rule_line as _line
from ._base import Owner, PortMapSpec
from ._conditions import iptables_conditions

TOP_DNAT = "CNI-HOSTPORT-DNAT"
SETMARK = "CNI-HOSTPORT-SETMARK"
MARK_MASQ = "CNI-HOSTPORT-MASQ"
OLD_TOP_SNAT = "CNI-HOSTPORT-SNAT"
#: The multiport match takes at most 15 ports.
_MULTIPORT_MAX = 15
_ATTEMPTS = 5

_TOP_ENTRY = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", TOP_DNAT]
_MASQ_ENTRY = ["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", MARK_MASQ]


def dnat_chain(network: str, container_id: str) -> str:
    """The per-container chain, ``CNI-DN-`` + 21 hex digits."""
    return hash_with_prefix(28, "CNI-DN-", network + container_id)


def _old_snat_chain(network: str, container_id: str) -> str:
    return hash_with_prefix(28, "CNI-SN-", network + container_id)


def dnat_comment(network: str, container_id: str) -> str:
    """The comment on the container's entry rules, as iptables stores the reference's.

    The reference cuts a comment over 255 bytes (a long container ID) to 253 bytes and
    ``...``, and iptables keeps 255 bytes of those 256: we write those 255 bytes, so both
    plugins make the same rule and CHECK finds what ADD wrote.
    """
    comment = f'dnat name: "{network}" id: "{container_id}"'
    if len(comment.encode()) > COMMENT_MAX:
        comment = stored_comment(comment)[:COMMENT_MAX - 2] + "..."
    return stored_comment(comment)


def _mark(bit: int) -> str:
    value = 1 << bit
    return f"{value:#x}/{value:#x}"


def _host_cidr(addr: object, family: int) -> str:
    return f"{addr}/{32 if family == 4 else 128}"


def container_rules(spec: PortMapSpec) -> list[list[str]]:
    """The per-container chain's rules, in iptables-save form and order."""
    setmark = spec.external_set_mark_chain or SETMARK
    ip = spec.container.ip
    target = f"{ip}" if spec.family == 4 else f"[{ip}]"
    rules: list[list[str]] = []
    for m in spec.family_mappings():
        dst = ["-d", _host_cidr(m.dst_ip, spec.family)] if m.dst_ip is not None else []
        port = ["-p", m.protocol, "-m", m.protocol, "--dport", str(m.host_port)]
        if spec.snat:
            # iptables-save leaves out a 0.0.0.0/0 or ::/0 source.
            hairpin = [] if spec.masq_all else ["-s", str(spec.container.network)]
            rules.append([*hairpin, *dst, *port, "-j", setmark])
            if spec.family == 4 and not spec.masq_all:
                rules.append(["-s", "127.0.0.1/32", *dst, *port, "-j", setmark])
        rules.append([*dst, *port, "-j", "DNAT", "--to-destination",
                      f"{target}:{m.container_port}"])
    return rules


def entry_rules(spec: PortMapSpec, chain: str) -> list[list[str]]:
    """The CNI-HOSTPORT-DNAT rules that send the container's host ports to ``chain``.

    Like the reference plugin they list every mapping's host port, also those skipped for
    this family because of a host IP of the other family (those rules match nothing here).
    """
    comment = dnat_comment(spec.owner.network, spec.owner.container_id)
    by_proto: dict[str, list[int]] = {}
    for m in spec.mappings:
        by_proto.setdefault(m.protocol, []).append(m.host_port)
    conditions = iptables_conditions(spec.conditions, spec.family, "conditions")
    rules = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for start in range(0, len(ports), _MULTIPORT_MAX):
            chunk = ",".join(str(p) for p in ports[start:start + _MULTIPORT_MAX])
            rules.append(["-m", "comment", "--comment", comment, "-m", "multiport", "-p", proto,
                          "--destination-ports", chunk, *conditions, "-j", chain])
    return rules


def _jumps(table: NatTable, from_chain: str, to_chain: str) -> list[list[str]]:
    return [r for r in table.rules.get(from_chain, []) if _option(r, "-j") == to_chain]


def _shared_lines(table: NatTable, spec: PortMapSpec) -> list[str]:
    """Create whatever of the shared chains and rules is missing (``-N`` guards races)."""
    lines: list[str] = []

    def ensure(chain: str, rules: list[list[str]]) -> None:
        if chain not in table.chains:
            lines.append(f"-N {chain}")
        lines.extend(_line("-A", chain, r) for r in rules if r not in table.rules.get(chain, []))

    if spec.snat and spec.external_set_mark_chain is None:
        mark = _mark(spec.mark_bit)
        ensure(SETMARK, [["-m", "comment", "--comment", "CNI portfwd masquerade mark",
                          "-j", "MARK", "--set-xmark", mark]])
        ensure(MARK_MASQ, [["-m", "mark", "--mark", mark, "-j", "MASQUERADE"]])
        if _MASQ_ENTRY not in table.rules.get("POSTROUTING", []):
            # First in POSTROUTING: the bridge and ptp plugins' per-container masquerade
            # chains would otherwise take the packet (with the wrong source) first.
            lines.append(_line("-I", "POSTROUTING", ["1", *_MASQ_ENTRY]))
    ensure(TOP_DNAT, [])
    lines.extend(_line("-A", hook, _TOP_ENTRY) for hook in ("PREROUTING", "OUTPUT")
                 if _TOP_ENTRY not in table.rules.get(hook, []))
    return lines


def _removal_lines(table: NatTable, chain: str, top: str) -> list[str]:
    lines = [_line("-D", top, r) for r in _jumps(table, top, chain)]
    if chain in table.chains:
        lines += [f"-F {chain}", f"-X {chain}"]
    return lines


class IPTablesPortMap:
    """The ``iptables`` backend (iptables-nft or legacy, whichever the system provides)."""

    name: ClassVar[str] = "iptables"

    @classmethod
    def available(cls) -> bool:
        """True if iptables-save and iptables-restore are installed."""
        return all(shutil.which(tool) for tool in TOOLS[4])

    @classmethod
    def parse_conditions(cls, tokens: Sequence[str], family: int, key: str) -> tuple[str, ...]:
        """See :func:`~pycni.host.netfilter.portmap._conditions.iptables_conditions`."""
        return iptables_conditions(tokens, family, key)

    def forward(self, specs: Sequence[PortMapSpec]) -> None:
        """Per spec: shared chains, then the container chain and its entry rules, one batch."""
        for spec in specs:
            chain = dnat_chain(spec.owner.network, spec.owner.container_id)

            def plan(table: NatTable, spec: PortMapSpec = spec, chain: str = chain) -> list[str]:
                lines = _shared_lines(table, spec)
                # Declaring the chain creates it, or empties it if it exists (setup again).
                lines.append(f":{chain} - [0:0]")
                lines += [_line("-A", chain, r) for r in container_rules(spec)]
                lines += [_line("-D", TOP_DNAT, r) for r in _jumps(table, TOP_DNAT, chain)]
                lines += [_line("-I", TOP_DNAT, [str(i), *r])
                          for i, r in enumerate(entry_rules(spec, chain), start=1)]
                return lines

            transact_nat(spec.family, plan, f"set up port mappings in chain {chain} for "
                         f"container {spec.owner.container_id!r}", attempts=_ATTEMPTS)

    def check(self, specs: Sequence[PortMapSpec]) -> None:
        """Every rule the specs need must be in the container chain, plus the entry jumps."""
        for spec in specs:
            chain = dnat_chain(spec.owner.network, spec.owner.container_id)
            table = save_nat(spec.family)
            where = f"port mappings of {spec.owner.container_id} (IPv{spec.family})"
            if chain not in table.chains:
                raise KernelError(f"{where}: chain {chain} not found in table nat")
            have = table.rules.get(chain, [])
            for rule in container_rules(spec):
                if rule not in have:
                    raise KernelError(f"{where}: rule {' '.join(rule)!r} not found in chain "
                                      f"{chain}")
            if len(_jumps(table, TOP_DNAT, chain)) < len(entry_rules(spec, chain)):
                raise KernelError(f"{where}: {TOP_DNAT} does not send all host ports to {chain}")
            for hook in ("PREROUTING", "OUTPUT"):
                if _TOP_ENTRY not in table.rules.get(hook, []):
                    raise KernelError(f"{where}: {hook} does not jump to {TOP_DNAT}")

    def unforward(self, owner: Owner) -> None:
        """Remove the container chain and its entry rules (and a pre-0.7 SNAT chain)."""
        chain = dnat_chain(owner.network, owner.container_id)
        old = _old_snat_chain(owner.network, owner.container_id)
        for family in families():
            known = nat_chains(family)
            if known is not None and chain not in known and old not in known:
                continue  # neither chain, so no jumps to them (iptables refuses dangling jumps)
            transact_nat(family, lambda t: [*_removal_lines(t, chain, TOP_DNAT),
                                            *_removal_lines(t, old, OLD_TOP_SNAT)],
                         f"remove port mapping chain {chain}", attempts=_ATTEMPTS)

    def gc(self, network: str, valid: frozenset[tuple[str, str]]) -> None:
        """Remove chains whose entry comment names ``network`` and a container not in ``valid``."""
        keep = {dnat_chain(network, cid) for cid, _ in valid}
        prefix = dnat_comment(network, "")[: -len('"')]  # 'dnat name: "<network>" id: "'

        def plan(table: NatTable) -> list[str]:
            stale = sorted({_option(r, "-j") or "" for r in table.rules.get(TOP_DNAT, [])
                            if (_option(r, "--comment") or "").startswith(prefix)} - keep - {""})
            return [line for chain in stale for line in _removal_lines(table, chain, TOP_DNAT)]

        for family in families():
            transact_nat(family, plan, f"garbage-collect port mappings of network {network!r}",
                         attempts=_ATTEMPTS)


__all__ = ["IPTablesPortMap", "container_rules", "dnat_chain", "dnat_comment", "entry_rules"]
