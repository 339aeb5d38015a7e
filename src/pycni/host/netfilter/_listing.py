"""Listing the rules that mention a pod: for ``pycni inspect`` and the topology picture.

Rules made for a pod carry its container ID (portmap, firewall, iptables masquerade
comments) or one of its addresses (nftables masquerade matches ``ip saddr``, DNAT targets);
both rulesets are read whole, once, and filtered by those strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ...spec import KernelError
from . import _nft, _xtables


@dataclass(frozen=True)
class RuleLine:
    """One rule: which tool listed it, its table and chain, and the rule as that tool prints."""

    backend: str
    table: str
    chain: str
    rule: str


def _nft_lines() -> list[RuleLine]:
    if not _nft.available():
        return []
    out: list[RuleLine] = []
    table = chain = ""
    try:
        text = _nft._run(b"list ruleset", "listing the nftables ruleset", json_input=False,
                         use_library=None)
    except KernelError:
        return []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            table = line.removeprefix("table ").removesuffix("{").strip()
        elif line.startswith("chain "):
            chain = line.removeprefix("chain ").removesuffix("{").strip()
        elif line and line != "}" and not line.startswith(("type ", "policy ", "elements",
                                                             "set ", "map ")):
            out.append(RuleLine("nftables", table, chain, line))
    return out


def _xtables_lines() -> list[RuleLine]:
    out: list[RuleLine] = []
    for family in _xtables.families():
        proc = _xtables.run([_xtables._tool(family, 0)], check=False)
        if proc.returncode != 0:
            continue
        table = ""
        for line in proc.stdout.splitlines():
            if line.startswith("*"):
                table = f"ip{'6' if family == 6 else ''} {line[1:]}"
            elif line.startswith("-A "):
                chain = line.split()[1]
                out.append(RuleLine("iptables", table, chain, line))
    return out


def rules_mentioning(needles: Iterable[str]) -> list[RuleLine]:
    """Every nftables and iptables rule in this thread's netns containing one of ``needles``
    (container IDs, addresses); empty needles match nothing."""
    wanted = [n for n in needles if n]
    if not wanted:
        return []
    return [r for r in (*_nft_lines(), *_xtables_lines())
            if any(_mentions(r.rule, n) for n in wanted)]


def _mentions(rule: str, needle: str) -> bool:
    # An address must not match a longer one (10.1.0.2 in 10.1.0.25).
    start = rule.find(needle)
    while start >= 0:
        end = start + len(needle)
        if end == len(rule) or not (rule[end].isalnum() or rule[end] in ".:"):
            return True
        start = rule.find(needle, start + 1)
    return False


__all__ = ["RuleLine", "rules_mentioning"]
