"""The iptables backend: the reference plugin's chains and rules, through iptables(8).

Filter table, per address family present in the attachment::

    FORWARD        -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD   (first)
    CNI-FORWARD    -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
                   -d <ip> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
                   -s <ip> -j ACCEPT
    CNI-ADMIN      (left to the administrator; ``iptablesAdminChainName`` renames it)

``same-bridge`` adds the reference's CNI-ISOLATION-STAGE-1/2 chains (kept on DEL: other
containers may share the bridge); ``isolated`` (ours) adds CNI-ISOLATED, jumped to first
from FORWARD, dropping packets to the container that do not belong to a connection it
started or accepted before.
"""

from __future__ import annotations

from ....spec import KernelError
from .._xtables import run
from ._base import POLICY_ISOLATED, POLICY_SAME_BRIDGE, Attachment, missing_tool

FORWARD = "FORWARD"
PRIV_CHAIN = "CNI-FORWARD"
DEFAULT_ADMIN_CHAIN = "CNI-ADMIN"
STAGE1 = "CNI-ISOLATION-STAGE-1"
STAGE2 = "CNI-ISOLATION-STAGE-2"
ISOLATED_CHAIN = "CNI-ISOLATED"
_SAME_BRIDGE_COMMENT = "CNI firewall plugin rules (ingressPolicy: same-bridge)"
_ISOLATED_COMMENT = "CNI firewall plugin rules (ingressPolicy: isolated)"


def _comment(text: str) -> list[str]:
    return ["-m", "comment", "--comment", text]


def priv_chain_rules(ip: str) -> list[list[str]]:
    """The two per-address rules of CNI-FORWARD."""
    return [["-d", ip, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-s", ip, "-j", "ACCEPT"]]


def isolated_rule(ip: str) -> list[str]:
    """CNI-ISOLATED's per-address rule: only replies reach the container."""
    return ["-d", ip, "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED", "-j", "DROP",
            *_comment(_ISOLATED_COMMENT)]


class IPTables:
    """One address family's iptables."""

    def __init__(self, version: int) -> None:
        self.tool = "iptables" if version == 4 else "ip6tables"

    def _run(self, *args: str, check: bool = True) -> bool:
        proc = run([self.tool, "-w", "-t", "filter", *args], check=check)
        return proc.returncode == 0

    def exists(self, chain: str, rule: list[str]) -> bool:
        """``-C``: is the rule in the chain?"""
        return self._run("-C", chain, *rule, check=False)

    def has_chain(self, chain: str) -> bool:
        """Does the chain exist?"""
        return self._run("-S", chain, check=False)

    def ensure_chain(self, chain: str) -> None:
        """Create the chain unless it exists."""
        if not self.has_chain(chain):
            self._run("-N", chain)

    def insert_unique(self, chain: str, rule: list[str], *, first: bool) -> None:
        """Add the rule (first or last) unless an identical one is there."""
        if not self.exists(chain, rule):
            if first:
                self._run("-I", chain, "1", *rule)
            else:
                self._run("-A", chain, *rule)

    def delete(self, chain: str, rule: list[str]) -> None:
        """Delete every copy of the rule; absent rules and chains are fine."""
        while self.exists(chain, rule):
            self._run("-D", chain, *rule)


class IptablesBackend:
    """The ``iptables`` firewall backend."""

    name = "iptables"

    def unavailable(self) -> str | None:
        """iptables must be installed."""
        return missing_tool("iptables")

    @staticmethod
    def _families(att: Attachment) -> list[tuple[IPTables, list[str]]]:
        return [(IPTables(v), att.host_ips(v)) for v in (4, 6) if att.host_ips(v)]

    @staticmethod
    def _jumps(att: Attachment) -> tuple[list[str], list[str]]:
        admin = att.admin_chain or DEFAULT_ADMIN_CHAIN
        return ([*_comment("CNI firewall plugin rules"), "-j", PRIV_CHAIN],
                [*_comment("CNI firewall plugin admin overrides"), "-j", admin])

    def add(self, att: Attachment) -> None:
        """Set up the chains, then the per-address rules; undo the latter on failure."""
        to_forward, to_admin = self._jumps(att)
        for ipt, ips in self._families(att):
            ipt.ensure_chain(PRIV_CHAIN)
            ipt.ensure_chain(att.admin_chain or DEFAULT_ADMIN_CHAIN)
            ipt.insert_unique(FORWARD, to_forward, first=True)
            ipt.insert_unique(PRIV_CHAIN, to_admin, first=True)
            try:
                for ip in ips:
                    for rule in priv_chain_rules(ip):
                        ipt.insert_unique(PRIV_CHAIN, rule, first=False)
                if att.ingress_policy == POLICY_SAME_BRIDGE:
                    self._same_bridge(ipt, att.bridge)
                elif att.ingress_policy == POLICY_ISOLATED:
                    ipt.ensure_chain(ISOLATED_CHAIN)
                    ipt.insert_unique(FORWARD, [*_comment(_ISOLATED_COMMENT), "-j",
                                                ISOLATED_CHAIN], first=True)
                    for ip in ips:
                        ipt.insert_unique(ISOLATED_CHAIN, isolated_rule(ip), first=False)
            except Exception:
                self._delete_family(ipt, ips)
                raise

    @staticmethod
    def _same_bridge(ipt: IPTables, bridge: str) -> None:
        comment = _comment(_SAME_BRIDGE_COMMENT)
        for chain in (STAGE1, STAGE2):
            ipt.ensure_chain(chain)
        # Before CNI-FORWARD, whose per-address ACCEPTs would otherwise win.
        ipt.insert_unique(FORWARD, ["-j", STAGE1, *comment], first=True)
        ipt.insert_unique(STAGE1, ["-i", bridge, "!", "-o", bridge, "-j", STAGE2, *comment],
                          first=True)
        ipt.insert_unique(STAGE1, ["-j", "RETURN", *comment], first=False)
        ipt.insert_unique(STAGE2, ["-o", bridge, "-j", "DROP", *comment], first=True)
        ipt.insert_unique(STAGE2, ["-j", "RETURN", *comment], first=False)

    @staticmethod
    def _delete_family(ipt: IPTables, ips: list[str]) -> None:
        for ip in ips:
            for rule in priv_chain_rules(ip):
                ipt.delete(PRIV_CHAIN, rule)
            ipt.delete(ISOLATED_CHAIN, isolated_rule(ip))

    def delete(self, att: Attachment) -> None:
        """Remove the per-address rules; shared chains stay, as in the reference."""
        for ipt, ips in self._families(att):
            self._delete_family(ipt, ips)

    def check(self, att: Attachment) -> None:
        """Every chain, jump and per-address rule ADD made must be there."""
        to_forward, to_admin = self._jumps(att)
        for ipt, ips in self._families(att):
            wanted = [(FORWARD, to_forward), (PRIV_CHAIN, to_admin)]
            wanted += [(PRIV_CHAIN, r) for ip in ips for r in priv_chain_rules(ip)]
            if att.ingress_policy == POLICY_SAME_BRIDGE:
                comment = _comment(_SAME_BRIDGE_COMMENT)
                wanted += [(FORWARD, ["-j", STAGE1, *comment]),
                           (STAGE1, ["-i", att.bridge, "!", "-o", att.bridge, "-j", STAGE2,
                                     *comment]),
                           (STAGE2, ["-o", att.bridge, "-j", "DROP", *comment])]
            elif att.ingress_policy == POLICY_ISOLATED:
                wanted += [(ISOLATED_CHAIN, isolated_rule(ip)) for ip in ips]
            for chain, rule in wanted:
                if not ipt.exists(chain, rule):
                    raise KernelError(f"expected {ipt.tool} rule in {chain} not found",
                                      " ".join(rule))
