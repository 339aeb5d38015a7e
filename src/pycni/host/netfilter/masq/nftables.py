"""Masquerade with nftables, in the reference plugins' layout (plugins >= 1.5)::

    table inet cni_plugins_masquerade {
        chain masq_checks {
            ip saddr 10.1.0.2 ip daddr != 10.1.0.0/24 masquerade comment "<hash>, net: ..."
        }
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip daddr 224.0.0.0/4 return
            ip6 daddr ff00::/8 return
            goto masq_checks
        }
    }

One rule per container address. Its comment starts with a hash of the network and of
(ifname, container id), so teardown needs no addresses and GC can tell networks apart; rules
written by the Go plugins and by pycni are interchangeable. The table is shared by every
network and never removed (other attachments, or other tools, may still use it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ....spec import KernelError
from .. import _nft
from .._names import hash_with_prefix
from ._base import MULTICAST, IPInterface

TABLE = "cni_plugins_masquerade"
CHAIN = "masq_checks"
POSTROUTING = "postrouting"
#: knftables' limit, which nftables enforces for rule comments (NFT_USERDATA_MAXLEN).
COMMENT_MAX = 128
_SNAT_PRIORITY = 100
_FAMILY = {4: "ip", 6: "ip6"}


def network_hash(network: str) -> str:
    """16 hex digits identifying ``network`` (the start of each of its rules' comments)."""
    return hash_with_prefix(16, "", network)


def instance_hash(network: str, container_id: str, ifname: str) -> str:
    """33 characters identifying one attachment's rules."""
    return f"{network_hash(network)}-{hash_with_prefix(16, '', f'{ifname}:{container_id}')}"


def rule_comment(network: str, container_id: str, ifname: str) -> str:
    """``<hash>, net: <network>, if: <ifname>, id: <id>``, at most COMMENT_MAX bytes."""
    def clean(s: str) -> str:
        return s.replace('"', "")

    text = (f"{instance_hash(network, container_id, ifname)}, net: {clean(network)}, "
            f"if: {clean(ifname)}, id: {clean(container_id)}")
    raw = text.encode()
    if len(raw) > COMMENT_MAX:
        text = raw[:COMMENT_MAX].decode(errors="ignore")
    return text


def _obj(kind: str, **fields: Any) -> dict[str, Any]:
    return {kind: {"family": "inet", "table": TABLE, **fields}}


def _payload(proto: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": field}}


def _prefix(net: Any) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _masq_rule(ip: IPInterface, comment: str) -> dict[str, Any]:
    proto = _FAMILY[ip.version]
    expr = [
        {"match": {"op": "==", "left": _payload(proto, "saddr"), "right": str(ip.ip)}},
        {"match": {"op": "!=", "left": _payload(proto, "daddr"), "right": _prefix(ip.network)}},
        {"masquerade": None},
    ]
    return {"add": _obj("rule", chain=CHAIN, comment=comment, expr=expr)}


def _skeleton() -> list[dict[str, Any]]:
    """Create the table and chains if missing and (re)write postrouting's three rules."""
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": "inet", "name": TABLE}}},
        {"add": _obj("chain", name=CHAIN)},
        {"add": _obj("chain", name=POSTROUTING, type="nat", hook="postrouting",
                     prio=_SNAT_PRIORITY, policy="accept")},
        {"flush": _obj("chain", name=POSTROUTING)},
    ]
    for version, net in sorted(MULTICAST.items()):
        match = {"match": {"op": "==", "left": _payload(_FAMILY[version], "daddr"),
                           "right": _prefix(net)}}
        cmds.append({"add": _obj("rule", chain=POSTROUTING, expr=[match, {"return": None}])})
    cmds.append({"add": _obj("rule", chain=POSTROUTING, expr=[{"goto": {"target": CHAIN}}])})
    return cmds


def _list_rules() -> list[dict[str, Any]]:
    """The rules of masq_checks (with handles); none when the table or chain is missing."""
    try:
        out = _nft.nft_list([{"list": _obj("chain", name=CHAIN)}],
                            what=f"listing chain inet {TABLE} {CHAIN}")
    except _nft.NftError as exc:
        if exc.not_found:
            return []
        raise
    return [item["rule"] for item in out if "rule" in item]


def _owned(rules: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The rules whose comment starts with ``prefix`` (an instance or network hash)."""
    return [r for r in rules if str(r.get("comment", "")).startswith(prefix)]


def _delete(rule: dict[str, Any]) -> dict[str, Any]:
    return {"delete": _obj("rule", chain=CHAIN, handle=rule["handle"])}


class NFTablesMasq:
    """The ``nftables`` backend (libnftables via ctypes, else the ``nft`` executable)."""

    name: ClassVar[str] = "nftables"

    @classmethod
    def available(cls) -> bool:
        """True if libnftables or nft is installed."""
        return _nft.available()

    @staticmethod
    def _transact(plan: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
                  what: str) -> None:
        """List masq_checks, run the batch ``plan`` makes of its rules; once more on failure.

        A rule deleted by handle may vanish between the listing and the batch (a concurrent
        DEL or GC), which fails the whole batch; a fresh listing fixes that.
        """
        for attempt in (1, 2):
            cmds = plan(_list_rules())
            if not cmds:
                return
            try:
                _nft.nft_write(cmds, what=what)
            except KernelError as exc:
                if attempt == 2:
                    raise KernelError(f"failed to {what}", exc.details or exc.msg) from exc
            else:
                return

    def setup(self, network: str, container_id: str, ifname: str,
              ips: Sequence[IPInterface]) -> None:
        """Replace this attachment's rules in masq_checks by one per address, atomically."""
        comment = rule_comment(network, container_id, ifname)
        mine = instance_hash(network, container_id, ifname)

        def plan(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
            stale = [_delete(r) for r in _owned(rules, mine)]
            return _skeleton() + stale + [_masq_rule(ip, comment) for ip in ips]

        self._transact(plan, f"set up masquerading in inet {TABLE} {CHAIN} for {comment!r}")

    def teardown(self, network: str, container_id: str, ifname: str) -> None:
        """Delete the attachment's rules (found by comment); a missing table is fine."""
        mine = instance_hash(network, container_id, ifname)
        self._transact(lambda rules: [_delete(r) for r in _owned(rules, mine)],
                       f"remove masquerading rules from inet {TABLE} {CHAIN} "
                       f"for {rule_comment(network, container_id, ifname)!r}")

    def gc(self, network: str, valid: frozenset[tuple[str, str]]) -> None:
        """Delete the rules of ``network`` whose attachment is not in ``valid``."""
        keep = {instance_hash(network, cid, ifname) for cid, ifname in valid}

        def plan(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [_delete(r) for r in _owned(rules, network_hash(network) + "-")
                    if str(r["comment"])[:33] not in keep]

        self._transact(plan, f"garbage-collect masquerading rules of network {network!r} "
                             f"from inet {TABLE} {CHAIN}")
