"""The only package that talks to the kernel: netns, links, addresses, routes, sysctl, netfilter."""

from . import links
from ._netns import (
    NetNS,
    NetNSNotFound,
    create_netns,
    enter,
    list_netns,
    netns_path,
    open_netns,
    remove_netns,
    run_in_netns,
    same_netns,
)

__all__ = [
    "NetNS",
    "NetNSNotFound",
    "create_netns",
    "enter",
    "links",
    "list_netns",
    "netns_path",
    "open_netns",
    "remove_netns",
    "run_in_netns",
    "same_netns",
]
