"""The nftables backend (ours; the reference has none), through ``nft -j -f -``.

One table holds everything, so pycni never edits chains it does not own::

    table inet cni_firewall
      chain forward             hook forward, priority filter, policy accept
          jump isolated ; jump isolation_stage_1 ; jump cni_forward
      chain isolated            ip daddr <ip> ct state new,invalid,untracked drop   (isolated)
      chain isolation_stage_1   iifname <br> oifname != <br> jump isolation_stage_2 (same-bridge)
      chain isolation_stage_2   oifname <br> drop                                   (same-bridge)
      chain cni_forward         jump cni_admin
                                ip daddr <ip> ct state established,related accept
                                ip saddr <ip> accept
      chain cni_admin           (left to the administrator)

Each per-container rule carries the comment ``<containerID>/<ifname>``, which is how DEL and
GC find them; per-bridge rules carry ``bridge:<name>`` and stay when containers leave.
Every change is one ``nft`` transaction: it applies completely or not at all.
Batches go through ``host.netfilter._nft`` (libnftables in-process, else ``nft -j -f -``).
"""

from __future__ import annotations

from typing import Any

from ....spec import KernelError
from ....store import fit_name
from .._nft import NftError, available, nft_json
from ._base import POLICY_ISOLATED, POLICY_SAME_BRIDGE, Attachment

TABLE = "cni_firewall"
FAMILY = "inet"
BASE_CHAIN = "forward"
CHAINS = ("isolated", "isolation_stage_1", "isolation_stage_2", "cni_forward", "cni_admin")
_COMMENT_MAX = 127


def nft(commands: list[dict[str, Any]]) -> None:
    """Apply ``commands`` (libnftables JSON objects) as one transaction."""
    if commands:
        nft_json(commands, what=f"firewall rules in {FAMILY} {TABLE}")


def list_table() -> list[dict[str, Any]] | None:
    """Our table's objects (chains, rules), or None if it does not exist."""
    try:
        return nft_json([{"list": {"table": {"family": FAMILY, "name": TABLE}}}],
                        what=f"listing {FAMILY} {TABLE}")
    except NftError as exc:
        if exc.not_found:
            return None
        raise


def _rules(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i["rule"] for i in items if "rule" in i]


def owner_comment(att: Attachment) -> str:
    """The comment marking an attachment's rules: ``<containerID>/<ifname>``.

    One that would not fit nftables' comment is hashed (see :func:`pycni.store.fit_name`):
    cutting it would give two long IDs with a common prefix the same comment, and one
    container's DEL would remove the other's rules.
    """
    return fit_name(f"{att.container_id}/{att.ifname}", limit=_COMMENT_MAX)


def _rule(chain: str, expr: list[dict[str, Any]], comment: str = "") -> dict[str, Any]:
    rule: dict[str, Any] = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}
    if comment:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _addr(version: int, field: str, ip: str) -> dict[str, Any]:
    proto = "ip" if version == 4 else "ip6"
    return _match({"payload": {"protocol": proto, "field": field}}, ip.split("/", maxsplit=1)[0])


def _ct_state(states: list[str]) -> dict[str, Any]:
    return _match({"ct": {"key": "state"}}, states, op="in")


def _ifname(key: str, name: str, op: str = "==") -> dict[str, Any]:
    return _match({"meta": {"key": key}}, name, op=op)


def _jump(target: str) -> dict[str, Any]:
    return {"jump": {"target": target}}


def attachment_rules(att: Attachment) -> list[dict[str, Any]]:
    """The per-container rules ADD adds."""
    owner = owner_comment(att)
    out = []
    for version in (4, 6):
        for ip in att.host_ips(version):
            out.append(_rule("cni_forward", [_addr(version, "daddr", ip),
                                             _ct_state(["established", "related"]),
                                             {"accept": None}], owner))
            out.append(_rule("cni_forward", [_addr(version, "saddr", ip), {"accept": None}],
                             owner))
            if att.ingress_policy == POLICY_ISOLATED:
                out.append(_rule("isolated", [_addr(version, "daddr", ip),
                                              _ct_state(["new", "invalid", "untracked"]),
                                              {"drop": None}], owner))
    return out


def bridge_rules(bridge: str) -> list[dict[str, Any]]:
    """The per-bridge same-bridge isolation rules."""
    tag = f"bridge:{bridge}"[:_COMMENT_MAX]
    return [_rule("isolation_stage_1", [_ifname("iifname", bridge),
                                        _ifname("oifname", bridge, op="!="),
                                        _jump("isolation_stage_2")], tag),
            _rule("isolation_stage_2", [_ifname("oifname", bridge), {"drop": None}], tag)]


def _skeleton(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Table, chains and the fixed jumps, for whatever of them is missing."""
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    cmds.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": BASE_CHAIN,
                                   "type": "filter", "hook": "forward", "prio": 0,
                                   "policy": "accept"}}})
    cmds += [{"add": {"chain": {"family": FAMILY, "table": TABLE, "name": c}}} for c in CHAINS]
    rules = _rules(items or [])
    if not any(r["chain"] == BASE_CHAIN for r in rules):
        cmds += [_rule(BASE_CHAIN, [_jump(c)])
                 for c in ("isolated", "isolation_stage_1", "cni_forward")]
    if not any(r["chain"] == "cni_forward" and r.get("comment") is None for r in rules):
        cmds.append(_rule("cni_forward", [_jump("cni_admin")]))
    return cmds


def _deletions(items: list[dict[str, Any]] | None, comment: str) -> list[dict[str, Any]]:
    return [{"delete": {"rule": {"family": FAMILY, "table": TABLE, "chain": r["chain"],
                                 "handle": r["handle"]}}}
            for r in _rules(items or []) if r.get("comment") == comment]


def _same(rule_a: dict[str, Any], rule_b: dict[str, Any]) -> bool:
    return bool(rule_a.get("chain") == rule_b.get("chain")
                and rule_a.get("comment") == rule_b.get("comment"))


class NftablesBackend:
    """The ``nftables`` firewall backend."""

    name = "nftables"

    def unavailable(self) -> str | None:
        """libnftables or the nft executable must be installed."""
        return None if available() else "nftables is not installed (no libnftables, no nft)"

    def add(self, att: Attachment) -> None:
        """Skeleton, then (replacing any earlier copy) this attachment's rules, atomically."""
        items = list_table()
        cmds = _skeleton(items)
        cmds += _deletions(items, owner_comment(att))
        cmds += attachment_rules(att)
        if att.ingress_policy == POLICY_SAME_BRIDGE:
            existing = _rules(items or [])
            cmds += [r for r in bridge_rules(att.bridge)
                     if not any(_same(r["add"]["rule"], e) for e in existing)]
        nft(cmds)

    def delete(self, att: Attachment) -> None:
        """Delete the rules carrying this attachment's comment."""
        items = list_table()
        if items is not None:
            nft(_deletions(items, owner_comment(att)))

    def check(self, att: Attachment) -> None:
        """The jumps and every per-container rule must be there."""
        items = list_table()
        if items is None:
            raise KernelError(f"nftables table {FAMILY} {TABLE} not found")
        rules = _rules(items)
        for target in ("isolated", "isolation_stage_1", "cni_forward"):
            if not any(r["chain"] == BASE_CHAIN and r["expr"] == [_jump(target)] for r in rules):
                raise KernelError(f"jump from {BASE_CHAIN} to {target} not found in "
                                  f"{FAMILY} {TABLE}")
        expected = [r["add"]["rule"] for r in attachment_rules(att)]
        if att.ingress_policy == POLICY_SAME_BRIDGE:
            expected += [r["add"]["rule"] for r in bridge_rules(att.bridge)]
        for want in expected:
            count = sum(1 for e in expected if _same(e, want))
            have = sum(1 for r in rules if _same(r, want))
            if have < count:
                raise KernelError(f"rule for {want.get('comment')} missing from chain "
                                  f"{want['chain']} of {FAMILY} {TABLE}")
