"""Reading what a network namespace holds (for pod status): links and their addresses."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from . import _rtnl as rt
from ._netns import run_in_netns
from .links import LinkInfo, _link_info, kernel_op, route_socket


def _links_here() -> list[LinkInfo]:
    # Two dumps (links, then every address) instead of one address request per link.
    with route_socket() as sock, kernel_op("failed to list links and addresses"):
        links = {info.index: info for info in map(_link_info, sock.links())}
        addresses: dict[int, list[str]] = {idx: [] for idx in links}
        for body in sock.addresses():
            _, prefixlen, _, _, index = rt.IFADDR.unpack_from(body)
            found = addresses.get(index)
            packed = rt.attrs(body, rt.IFADDR.size).get(rt.IFA_ADDRESS)
            if found is not None and packed is not None:
                found.append(f"{ipaddress.ip_address(packed)}/{prefixlen}")
    return [replace(links[idx], addresses=tuple(sorted(addresses[idx], key=lambda a: ":" in a)))
            for idx in sorted(links)]


def netns_links(netns: str) -> list[LinkInfo]:
    """Every link in ``netns`` (a path) with its state and addresses, by ifindex.

    NetNSNotFound (code 3) if the namespace is gone.
    """
    return run_in_netns(netns, _links_here)
