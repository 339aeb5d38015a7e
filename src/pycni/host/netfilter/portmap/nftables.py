"""Port mapping with nftables: the reference plugin's ``cni_hostport`` tables.

Per family (``ip`` and ``ip6``), table ``cni_hostport``::

    chain prerouting   { type nat hook prerouting priority dstnat;
                         jump hostip_hostports; fib daddr type local jump hostports }
    chain output       { type nat hook output priority -100;
                         jump hostip_hostports; fib daddr type local jump hostports }
    chain hostports        { <conditions> tcp dport 8080 dnat to 10.88.0.5:80   comment C }
    chain hostip_hostports { <conditions> ip daddr 192.0.2.1 tcp dport 8081 dnat ... comment C }
    chain masquerading { type nat hook postrouting priority srcnat;
                         ip saddr { 10.88.0.0/24, 127.0.0.0/8 } ip daddr 10.88.0.5
                             ct status dnat masquerade comment C }

C is :func:`owner_comment` (``<network>/<ifname>/<container id>``). The reference plugin
writes the bare container id; rules with that comment are removed by DEL too, so a node can
switch implementations. ``fib daddr type local`` in prerouting keeps a host port from
capturing traffic that is only routed through the node (the reference plugin's
CVE-2025-67499 fix).

Each call is one nftables transaction for both families: concurrent ADDs never see each
other half done, and no lock is held between calls. The hook chains are flushed and
rewritten by every ADD, which is idempotent and repairs them if someone edited them.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Sequence, Set
from typing import Any, ClassVar

from ....spec import KernelError
from .. import _nft
from ._base import Owner, PortMapSpec, network_tag, owner_comment
from ._conditions import nftables_conditions

TABLE = "cni_hostport"
HOSTPORTS = "hostports"
HOSTIP_HOSTPORTS = "hostip_hostports"
MASQUERADING = "masquerading"
RULE_CHAINS = (HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING)
FAMILIES = {4: "ip", 6: "ip6"}

# Only 127.0.0.0/8 crosses to a container after DNAT (with route_localnet); ::1 never leaves
# the host, so there is no IPv6 counterpart.
_LOOPBACK_V4 = "127.0.0.0/8"


#: The fixed rules of the prerouting and output chains, as libnftables lists them.
_HOOK_EXPRS = [
    [{"jump": {"target": HOSTIP_HOSTPORTS}}],
    [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                "right": "local"}},
     {"jump": {"target": HOSTPORTS}}],
]
_RULE_KEYS = {"family", "table", "chain", "handle", "expr"}
#: The hook chains: name -> (hook, priority as written, priority as listed).
_HOOKS = {
    "prerouting": ("prerouting", "dstnat", -100),
    "output": ("output", "-100", -100),
    MASQUERADING: ("postrouting", "srcnat", 100),
}


def _in_place(items: list[dict[str, Any]]) -> set[str]:
    """What of :func:`_hook_chains` a table listing shows already done, as names.

    A chain's name when it exists as declared (a hook chain with its hook, priority and
    policy), and ``"<chain> rules"`` when a hook chain holds exactly its fixed rules.
    """
    chains = {c["name"]: c for item in items if "chain" in item and (c := item["chain"])}
    rules = [item["rule"] for item in items if "rule" in item]
    done = {name for name in (HOSTPORTS, HOSTIP_HOSTPORTS) if name in chains}
    for name, (hook, _, prio) in _HOOKS.items():
        c = chains.get(name, {})
        if (c.get("type"), c.get("hook"), c.get("prio"), c.get("policy")) == (
                "nat", hook, prio, "accept"):
            done.add(name)
        mine = [r for r in rules if r.get("chain") == name]
        if [r.get("expr") for r in mine] == _HOOK_EXPRS and all(set(r) == _RULE_KEYS
                                                                for r in mine):
            done.add(f"{name} rules")
    return done


def _hook_chains(fam: str, snat: bool, done: Set[str] = frozenset()) -> list[str]:
    """The table, its chains and the hook chains' fixed rules (flushed and rewritten).

    What ``done`` (see :func:`_in_place`) names is left out: the result is the same, and
    re-adding an existing chain or deleting rules makes the kernel's commit wait for an
    RCU grace period (~12 ms each time).
    """
    t = f"{fam} {TABLE}"
    lines = [f"add table {t}"]
    lines += [f"add chain {t} {name}" for name in (HOSTPORTS, HOSTIP_HOSTPORTS)
              if name not in done]
    for chain in ("prerouting", "output"):
        hook, prio, _ = _HOOKS[chain]
        if chain not in done:
            lines.append(f"add chain {t} {chain} {{ type nat hook {hook} priority {prio} ; "
                         "policy accept ; }")
        if f"{chain} rules" not in done:
            lines += [
                f"flush chain {t} {chain}",
                f"add rule {t} {chain} jump {HOSTIP_HOSTPORTS}",
                f"add rule {t} {chain} fib daddr type local jump {HOSTPORTS}",
            ]
    if snat and MASQUERADING not in done:
        lines.append(f"add chain {t} {MASQUERADING} {{ type nat hook postrouting priority "
                     "srcnat ; policy accept ; }")
    return lines


def rule_bodies(spec: PortMapSpec) -> list[tuple[str, str]]:
    """(chain, rule text without the comment) for every rule ``spec`` needs, in order."""
    fam = FAMILIES[spec.family]
    cip = spec.container.ip
    target = f"{cip}" if spec.family == 4 else f"[{cip}]"
    conditions = " ".join(nftables_conditions(spec.conditions, spec.family, "conditions"))
    out: list[tuple[str, str]] = []
    for m in spec.family_mappings():
        match = [conditions] if conditions else []
        if m.dst_ip is not None:
            match.append(f"{fam} daddr {m.dst_ip}")
        match.append(f"meta l4proto {m.protocol} th dport {m.host_port}")
        chain = HOSTIP_HOSTPORTS if m.dst_ip is not None else HOSTPORTS
        out.append((chain, " ".join([*match, f"dnat to {target}:{m.container_port}"])))
    if spec.snat and spec.family_mappings():
        if spec.masq_all:
            source = ""
        else:
            subnet = str(spec.container.network)
            sources = f"{{ {subnet}, {_LOOPBACK_V4} }}" if spec.family == 4 else subnet
            source = f"{fam} saddr {sources} "
        out.append((MASQUERADING, f"{source}{fam} daddr {cip} ct status dnat masquerade"))
    return out


def _list_table(family: int) -> list[dict[str, Any]]:
    """The objects (chains, rules) of one family's table; empty if the table does not exist."""
    try:
        return _nft.nft_list([{"list": {"table": {"family": FAMILIES[family], "name": TABLE}}}],
                             what=f"listing table {FAMILIES[family]} {TABLE}")
    except _nft.NftError as exc:
        if exc.not_found:
            return []
        raise


def _rules(family: int) -> list[dict[str, Any]]:
    return [item["rule"] for item in _list_table(family) if "rule" in item]


def _delete_rules(rules: Iterable[dict[str, Any]]) -> list[str]:
    return [f"delete rule {r['family']} {TABLE} {r['chain']} handle {r['handle']}" for r in rules]


class NFTablesPortMap:
    """The ``nftables`` backend (libnftables in-process, ``nft`` as fallback)."""

    name: ClassVar[str] = "nftables"

    @classmethod
    def available(cls) -> bool:
        """True if libnftables or the nft executable is installed."""
        return _nft.available()

    @classmethod
    def parse_conditions(cls, tokens: Sequence[str], family: int, key: str) -> tuple[str, ...]:
        """See :func:`~pycni.host.netfilter.portmap._conditions.nftables_conditions`."""
        return nftables_conditions(tokens, family, key)

    def forward(self, specs: Sequence[PortMapSpec]) -> None:
        """Write every spec's rules, replacing the owner's earlier ones, in one transaction."""
        if not specs:
            return
        owner = specs[0].owner
        comment = owner_comment(owner)
        for attempt in range(3):
            current = {family: _list_table(family) for family in FAMILIES}
            stale = [item["rule"] for family in FAMILIES for item in current[family]
                     if "rule" in item and item["rule"].get("chain") in RULE_CHAINS
                     and item["rule"].get("comment") == comment]
            script: list[str] = []
            for family in sorted({s.family for s in specs}):
                fam_specs = [s for s in specs if s.family == family]
                script += _hook_chains(FAMILIES[family], any(s.snat for s in fam_specs),
                                       _in_place(current[family]))
            script += _delete_rules(stale)
            for spec in specs:
                t = f"{FAMILIES[spec.family]} {TABLE}"
                script += [f'add rule {t} {chain} {body} comment "{comment}"'
                           for chain, body in rule_bodies(spec)]
            try:
                _nft.nft_text("\n".join(script) + "\n",
                              what=f"writing port mappings for {owner.container_id}")
            except _nft.NftError as exc:
                # A rule listed as stale was deleted meanwhile (a concurrent DEL of the
                # same attachment): list again.
                if not (exc.not_found and stale) or attempt == 2:
                    raise KernelError(f"failed to set up port mappings for container "
                                      f"{owner.container_id!r} in table {TABLE}",
                                      str(exc)) from exc
            else:
                return

    def check(self, specs: Sequence[PortMapSpec]) -> None:
        """Compare the owner's rules per chain with what ``specs`` need (counts and targets)."""
        for spec in specs:
            comment = owner_comment(spec.owner)
            family = spec.family
            items = _list_table(family)
            chains = {item["chain"]["name"] for item in items if "chain" in item}
            for hook in ("prerouting", "output"):
                if hook not in chains:
                    raise KernelError(f"port mappings of {spec.owner.container_id}: chain "
                                      f"{FAMILIES[family]} {TABLE} {hook} is missing")
            have = [item["rule"] for item in items
                    if "rule" in item and item["rule"].get("comment") == comment]
            for chain in RULE_CHAINS:
                want = [body for c, body in rule_bodies(spec) if c == chain]
                found = [r for r in have if r.get("chain") == chain]
                if len(found) != len(want):
                    raise KernelError(
                        f"port mappings of {spec.owner.container_id}: chain {FAMILIES[family]} "
                        f"{TABLE} {chain} has {len(found)} rules, expected {len(want)}")
                if chain == MASQUERADING:
                    continue
                targets = sorted(_dnat_target(r) for r in found)
                expected = sorted((str(spec.container.ip), m.container_port)
                                  for m in spec.family_mappings()
                                  if (chain == HOSTIP_HOSTPORTS) == (m.dst_ip is not None))
                if targets != expected:
                    raise KernelError(
                        f"port mappings of {spec.owner.container_id}: chain {chain} forwards "
                        f"to {targets}, expected {expected}")

    def unforward(self, owner: Owner) -> None:
        """Delete the owner's rules (and the reference plugin's bare-id ones) in both tables."""
        comments = {owner_comment(owner), owner.container_id}
        self._delete_matching(lambda c: c in comments,
                              f"port mappings of container {owner.container_id!r}")

    def gc(self, network: str, valid: frozenset[tuple[str, str]]) -> None:
        """Delete rules tagged with ``network`` whose attachment is not in ``valid``."""
        keep = {owner_comment(Owner(network, cid, ifname)) for cid, ifname in valid}
        prefix = network_tag(network) + "/"
        self._delete_matching(lambda c: c.startswith(prefix) and c not in keep,
                              f"stale port mappings of network {network!r}")

    @staticmethod
    def _delete_matching(wanted: Any, what: str) -> None:
        for attempt in range(3):
            rules = [r for family in FAMILIES for r in _rules(family)
                     if r.get("chain") in RULE_CHAINS and wanted(r.get("comment") or "")]
            if not rules:
                return
            try:
                _nft.nft_text("\n".join(_delete_rules(rules)) + "\n", what=f"deleting {what}")
            except _nft.NftError as exc:
                if not exc.not_found or attempt == 2:
                    raise KernelError(f"failed to delete {what}", str(exc)) from exc
            else:
                return


def _dnat_target(rule: dict[str, Any]) -> tuple[str, int]:
    """(address, port) of a rule's dnat statement, as nft -j prints it."""
    for expr in rule.get("expr", []):
        if "dnat" in expr:
            addr = str(expr["dnat"].get("addr", ""))
            with contextlib.suppress(ValueError):
                addr = str(ipaddress.ip_address(addr))
            return addr, int(expr["dnat"].get("port", 0))
    return "", 0


__all__ = ["TABLE", "NFTablesPortMap", "rule_bodies"]
