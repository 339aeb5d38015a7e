"""MAC spoof checking for bridge ports with nftables (the bridge plugin's ``macspoofchk``).

The layout is the reference plugin's, so either implementation can tear down what the
other set up: table ``bridge nat``, base chain ``PREROUTING`` (filter hook, priority -300),
a rule ``iifname <port> jump cni-br-iface-<id>``, that chain jumping to
``cni-br-iface-<id>-mac`` which returns for the container's MAC and drops everything else.
Every rule carries the comment ``macspoofchk-<id>`` (``<id>`` is ``<containerID>-<ifname>``).
Runs ``nft`` from the calling thread, so the rules land in that thread's namespace.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ..spec import KernelError

TABLE = "nat"
BASE_CHAIN = "PREROUTING"


def _chains(ref_id: str) -> tuple[str, str]:
    iface = f"cni-br-iface-{ref_id}"
    return iface, f"{iface}-mac"


def _nft(args: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=30)
    if proc.returncode != 0:
        raise KernelError(f"nft {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _apply(commands: list[dict[str, Any]]) -> None:
    # JSON input: chain names and comments need no quoting, and the batch is one transaction.
    _nft(["-j", "-f", "-"], json.dumps({"nftables": commands}))


def _rule(chain: str, expr: list[dict[str, Any]], comment: str) -> dict[str, Any]:
    return {"add": {"rule": {"family": "bridge", "table": TABLE, "chain": chain,
                             "expr": expr, "comment": comment}}}


def setup_spoofcheck(port: str, mac: str, ref_id: str) -> None:
    """Only frames with source MAC ``mac`` may enter the bridge from ``port``."""
    iface_chain, mac_chain = _chains(ref_id)
    comment = f"macspoofchk-{ref_id}"
    base = {"family": "bridge", "table": TABLE}
    # First transaction declares (idempotently) what the flushes below need to exist.
    _apply([
        {"add": {"table": {"family": "bridge", "name": TABLE}}},
        {"add": {"chain": {**base, "name": BASE_CHAIN, "type": "filter", "hook": "prerouting",
                           "prio": -300, "policy": "accept"}}},
        {"add": {"chain": {**base, "name": iface_chain}}},
        {"add": {"chain": {**base, "name": mac_chain}}},
    ])
    _apply([
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
    ])


def _ruleset() -> list[dict[str, Any]]:
    try:
        out = _nft(["-j", "list", "table", "bridge", TABLE])
    except KernelError:
        return []  # no table: nothing was set up here
    items: list[dict[str, Any]] = json.loads(out).get("nftables", [])
    return items


def teardown_spoofcheck(ref_id: str) -> None:
    """Remove what :func:`setup_spoofcheck` made for ``ref_id``; missing pieces are fine."""
    iface_chain, mac_chain = _chains(ref_id)
    comment = f"macspoofchk-{ref_id}"
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
        _apply(commands)


def spoofcheck_present(ref_id: str) -> bool:
    """True if any rule of ``ref_id``'s spoof check exists (for tests and CHECK)."""
    comment = f"macspoofchk-{ref_id}"
    return any(i.get("rule", {}).get("comment") == comment for i in _ruleset())
