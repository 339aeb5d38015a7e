"""The only package that talks to the kernel: netns, links, addresses, routes, sysctl, netfilter."""

from . import links
from ._addr import (
    AddrInfo,
    add_address,
    del_address,
    ensure_gateway_address,
    list_addresses,
    settle_addresses,
)
from ._bridge import attach_port, bridge_problem, ensure_bridge, port_vlans, set_port_vlans
from ._iface import check_iface_ips, check_routes, configure_iface
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
from ._route import (
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RouteInfo,
    add_route,
    del_route,
    has_route,
    list_routes,
)
from ._spoofcheck import setup_spoofcheck, spoofcheck_present, teardown_spoofcheck
from ._sysctl import enable_forwarding, sysctl_get, sysctl_set, sysctl_try_set
from ._veth import (
    Veth,
    create_veth,
    current_netns_fd,
    delete_link_with_addresses,
    random_veth_name,
)
from .links import LinkInfo, delete_link, link_info, list_links, require_link, wait_oper_up

__all__ = [
    "RT_SCOPE_HOST",
    "RT_SCOPE_LINK",
    "RT_SCOPE_UNIVERSE",
    "AddrInfo",
    "LinkInfo",
    "NetNS",
    "NetNSNotFound",
    "RouteInfo",
    "Veth",
    "add_address",
    "add_route",
    "attach_port",
    "bridge_problem",
    "check_iface_ips",
    "check_routes",
    "configure_iface",
    "create_netns",
    "create_veth",
    "current_netns_fd",
    "del_address",
    "del_route",
    "delete_link",
    "delete_link_with_addresses",
    "enable_forwarding",
    "ensure_bridge",
    "ensure_gateway_address",
    "enter",
    "has_route",
    "link_info",
    "links",
    "list_addresses",
    "list_links",
    "list_netns",
    "list_routes",
    "netns_path",
    "open_netns",
    "port_vlans",
    "random_veth_name",
    "remove_netns",
    "require_link",
    "run_in_netns",
    "same_netns",
    "set_port_vlans",
    "settle_addresses",
    "setup_spoofcheck",
    "spoofcheck_present",
    "sysctl_get",
    "sysctl_set",
    "sysctl_try_set",
    "teardown_spoofcheck",
    "wait_oper_up",
]
