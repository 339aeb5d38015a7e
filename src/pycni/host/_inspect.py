"""Reading what a network namespace holds (for pod status): links and their addresses."""

from __future__ import annotations

from dataclasses import replace

from ._netns import run_in_netns
from .links import LinkInfo, _link_info, rtnl


def _links_here() -> list[LinkInfo]:
    # Two dumps (links, then every address) instead of one address request per link.
    with rtnl() as ipr:
        links = {int(msg["index"]): _link_info(msg) for msg in ipr.get_links()}
        addresses: dict[int, list[str]] = {idx: [] for idx in links}
        for msg in ipr.get_addr():
            found = addresses.get(int(msg["index"]))
            if found is not None:
                found.append(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
    return [replace(links[idx], addresses=tuple(sorted(addresses[idx], key=lambda a: ":" in a)))
            for idx in sorted(links)]


def netns_links(netns: str) -> list[LinkInfo]:
    """Every link in ``netns`` (a path) with its state and addresses, by ifindex.

    NetNSNotFound (code 3) if the namespace is gone.
    """
    return run_in_netns(netns, _links_here)
