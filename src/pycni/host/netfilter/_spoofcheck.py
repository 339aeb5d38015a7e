"""MAC spoof checking for bridge ports with nftables (the bridge plugin's ``macspoofchk``).

The layout is the reference plugin's, so either implementation can tear down what the
other set up: table ``bridge nat``, base chain ``PREROUTING`` (filter hook, priority -300),
a rule ``iifname <port> jump cni-br-iface-<id>``, that chain jumping to
``cni-br-iface-<id>-mac`` which returns for the container's MAC and drops everything else.
Every rule carries the comment ``macspoofchk-<id>`` (``<id>`` is ``<containerID>-<ifname>``).

An nftables chain name holds at most 255 bytes, which the reference's ``<id>`` overruns for a
container ID longer than 233 bytes (the Go plugin then fails ADD). Such an ``<id>`` is hashed
(:func:`pycni._files.fit_name`), so every ID the reference takes keeps its layout.
Batches go through the nft driver from the calling thread, so the rules land in that
thread's namespace.
"""

from __future__ import annotations

from typing import Any

from ...store import fit_name
from ._nft import NftError, nft_json

TABLE = "nat"
BASE_CHAIN = "PREROUTING"
#: NFT_NAME_MAXLEN (256) with its NUL: the longest table, chain or set name.
_NAME_MAX = 255
#: The longest ``<id>`` whose chain ``cni-br-iface-<id>-mac`` fits :data:`_NAME_MAX`.
_KEY_MAX = _NAME_MAX - len("cni-br-iface--mac")


def _names(ref_id: str) -> tuple[str, str, str]:
    """The iface chain, mac chain and rule comment of ``ref_id`` (hashed if too long)."""
    key = fit_name(ref_id, limit=_KEY_MAX)
    iface = f"cni-br-iface-{key}"
    return iface, f"{iface}-mac", f"macspoofchk-{key}"


def _rule(chain: str, expr: list[dict[str, Any]], comment: str) -> dict[str, Any]:
    return {"add": {"rule": {"family": "bridge", "table": TABLE, "chain": chain,
                             "expr": expr, "comment": comment}}}


def setup_spoofcheck(port: str, mac: str, ref_id: str) -> None:
    """Only frames with source MAC ``mac`` may enter the bridge from ``port``."""
    iface_chain, mac_chain, comment = _names(ref_id)
    base = {"family": "bridge", "table": TABLE}
    what = f"MAC spoof check of {port} in bridge {TABLE}"
    # JSON: chain names and comments need no quoting, and each batch is one transaction.
    # The first declares (idempotently) what the flushes below need to exist.
    nft_json([
        {"add": {"table": {"family": "bridge", "name": TABLE}}},
        {"add": {"chain": {**base, "name": BASE_CHAIN, "type": "filter", "hook": "prerouting",
                           "prio": -300, "policy": "accept"}}},
        {"add": {"chain": {**base, "name": iface_chain}}},
        {"add": {"chain": {**base, "name": mac_chain}}},
    ], what=what)
    nft_json([
        {"flush": {"chain": {**base, "name": iface_chain}}},
        {"flush": {"chain": {**base, "name": mac_chain}}},
        _rule(BASE_CHAIN, [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": port}},
            {"jump": {"target": iface_chain}},
        ], comment),
        _rule(iface_chain, [{"jump": {"target": mac_chain}}], comment),
        _rule(mac_chain, [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                       "right": mac}},
            {"return": None},
        ], comment),
        _rule(mac_chain, [{"drop": None}], comment),
    ], what=what)


def _ruleset() -> list[dict[str, Any]]:
    try:
        return nft_json([{"list": {"table": {"family": "bridge", "name": TABLE}}}],
                        what=f"listing bridge {TABLE}")
    except NftError:
        return []  # no table: nothing was set up here


def teardown_spoofcheck(ref_id: str) -> None:
    """Remove what :func:`setup_spoofcheck` made for ``ref_id``; missing pieces are fine."""
    iface_chain, mac_chain, comment = _names(ref_id)
    items = _ruleset()
    chains = {i["chain"]["name"] for i in items if "chain" in i}
    base = {"family": "bridge", "table": TABLE}
    commands: list[dict[str, Any]] = []
    for item in items:
        rule = item.get("rule")
        if rule and rule["chain"] == BASE_CHAIN and rule.get("comment") == comment:
            commands.append({"delete": {"rule": {**base, "chain": BASE_CHAIN,
                                                 "handle": rule["handle"]}}})
    # The iface chain jumps to the mac chain, so it goes first.
    commands += [{"delete": {"chain": {**base, "name": c}}} for c in (iface_chain, mac_chain)
                 if c in chains]
    if commands:
        nft_json(commands, what=f"removing the MAC spoof check {comment!r}")


def spoofcheck_present(ref_id: str) -> bool:
    """True if any rule of ``ref_id``'s spoof check exists (for tests and CHECK)."""
    comment = _names(ref_id)[2]
    return any(i.get("rule", {}).get("comment") == comment for i in _ruleset())
