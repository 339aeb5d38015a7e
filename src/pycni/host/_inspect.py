"""Reading what a network namespace holds (for pod status): links and their addresses."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._netns import run_in_netns
from .links import rtnl

#: IFF_UP in a link's flags.
_IFF_UP = 0x1


@dataclass
class LinkState:
    """One link as seen in a namespace."""

    name: str
    index: int
    up: bool
    mac: str = ""
    mtu: int = 0
    #: ``"addr/prefix"`` strings, IPv4 first.
    addresses: list[str] = field(default_factory=list)


def _links_here() -> list[LinkState]:
    with rtnl() as ipr:
        by_index: dict[int, LinkState] = {}
        for msg in ipr.get_links():
            idx = int(msg["index"])
            by_index[idx] = LinkState(
                name=str(msg.get("IFLA_IFNAME") or ""),
                index=idx,
                up=bool(msg["flags"] & _IFF_UP),
                mac=str(msg.get("IFLA_ADDRESS") or ""),
                mtu=int(msg.get("IFLA_MTU") or 0),
            )
        for msg in ipr.get_addr():
            link = by_index.get(int(msg["index"]))
            if link is not None:
                link.addresses.append(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
    links = sorted(by_index.values(), key=lambda link: link.index)
    for link in links:
        link.addresses.sort(key=lambda a: ":" in a)
    return links


def netns_links(netns: str) -> list[LinkState]:
    """Every link in ``netns`` (a path) with its state and addresses, by ifindex.

    NetNSNotFound (code 3) if the namespace is gone.
    """
    return run_in_netns(netns, _links_here)
