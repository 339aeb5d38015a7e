"""Masquerade of pod traffic that leaves the cluster, in pycni's own nftables table.

Pods reach each other across nodes with their own addresses; traffic from a pod to anything
outside the cluster CIDRs leaves with the node's address instead. The rules live in the
table ``pycni-cluster`` of the ``ip`` (and ``ip6``) family, which nothing else writes, so
the whole table is replaced in one batch and deleted on uninstall; no other table or chain
is touched. Multicast is left alone (link-local protocols must keep their source).
"""

from __future__ import annotations

from typing import Any

from ..host.netfilter import NftError, nft_json
from ._base import Subnet

#: pycni's own table (one per family).
TABLE = "pycni-cluster"
_MULTICAST = {4: ("224.0.0.0", 4), 6: ("ff00::", 8)}


def _prefix(net: Subnet) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _batch(family: str, cidr: Subnet) -> list[dict[str, Any]]:
    proto = "ip" if cidr.version == 4 else "ip6"
    addr, length = _MULTICAST[cidr.version]
    table = {"family": family, "name": TABLE}
    chain = {"family": family, "table": TABLE, "name": "postrouting"}

    def match(field: str, op: str, right: Any) -> dict[str, Any]:
        return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}},
                          "right": right}}

    return [
        {"add": {"table": table}},
        {"add": {"chain": {**chain, "type": "nat", "hook": "postrouting", "prio": 100,
                           "policy": "accept"}}},
        {"flush": {"chain": chain}},
        {"add": {"rule": {"family": family, "table": TABLE, "chain": "postrouting",
                          "comment": "pycni: pod traffic leaving the cluster",
                          "expr": [match("saddr", "==", _prefix(cidr)),
                                   match("daddr", "!=", _prefix(cidr)),
                                   match("daddr", "!=", {"prefix": {"addr": addr,
                                                                    "len": length}}),
                                   {"masquerade": None}]}}},
    ]


def ensure_masquerade(cidrs: tuple[Subnet, ...]) -> None:
    """Replace pycni's masquerade rules with one per cluster CIDR (one batch per family)."""
    for cidr in cidrs:
        family = "ip" if cidr.version == 4 else "ip6"
        nft_json(_batch(family, cidr), what=f"nftables table {family} {TABLE}")


def remove_masquerade() -> None:
    """Delete pycni's masquerade tables; missing ones are fine."""
    for family in ("ip", "ip6"):
        try:
            nft_json([{"delete": {"table": {"family": family, "name": TABLE}}}],
                     what=f"deleting nftables table {family} {TABLE}")
        except NftError as exc:
            if not exc.not_found:
                raise


def masquerade_present() -> bool:
    """True if pycni's masquerade table exists in any family."""
    items = nft_json([{"list": {"tables": {}}}], what="listing nftables tables")
    return any(i.get("table", {}).get("name") == TABLE for i in items)


__all__ = ["TABLE", "ensure_masquerade", "masquerade_present", "remove_masquerade"]
