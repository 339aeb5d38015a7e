"""The only package that talks to the kernel: netns, links, addresses, routes, sysctl, netfilter.

Names are imported from their submodule on first use (PEP 562 ``__getattr__``), so a plugin
executable loads only the kernel code it calls.
"""

from __future__ import annotations

from .._lazy import lazy_package
from . import _pyroute2

# Before anything imports pyroute2 (only this package does): see _pyroute2.
_pyroute2.install()

# A plain constant rather than typing's: importing typing costs a plugin start ~10 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import links, netfilter
    from ._addr import (
        AddrInfo,
        add_address,
        del_address,
        ensure_gateway_address,
        list_addresses,
        settle_addresses,
    )
    from ._bridge import (
        attach_port,
        bridge_ports,
        bridge_problem,
        ensure_bridge,
        port_vlans,
        set_port_vlans,
        vlan_users,
    )
    from ._iface import check_iface_ips, check_routes, configure_iface
    from ._netns import (
        NetNS,
        NetNSNotFound,
        NotANetNSError,
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
    from ._sysctl import enable_forwarding, sysctl_get, sysctl_set, sysctl_try_set
    from ._veth import (
        Veth,
        create_veth,
        current_netns_fd,
        delete_link_with_addresses,
        random_veth_name,
    )
    from .links import LinkInfo, delete_link, link_info, list_links, require_link, wait_oper_up
    from .netfilter import (
        netfilter_backend,
        setup_spoofcheck,
        spoofcheck_present,
        teardown_spoofcheck,
    )

#: Public name -> the submodule that defines it.
_LAZY = {
    "AddrInfo": "_addr",
    "LinkInfo": "links",
    "NetNS": "_netns",
    "NetNSNotFound": "_netns",
    "NotANetNSError": "_netns",
    "RT_SCOPE_HOST": "_route",
    "RT_SCOPE_LINK": "_route",
    "RT_SCOPE_UNIVERSE": "_route",
    "RouteInfo": "_route",
    "Veth": "_veth",
    "add_address": "_addr",
    "add_route": "_route",
    "attach_port": "_bridge",
    "bridge_ports": "_bridge",
    "bridge_problem": "_bridge",
    "check_iface_ips": "_iface",
    "check_routes": "_iface",
    "configure_iface": "_iface",
    "create_netns": "_netns",
    "create_veth": "_veth",
    "current_netns_fd": "_veth",
    "del_address": "_addr",
    "del_route": "_route",
    "delete_link": "links",
    "delete_link_with_addresses": "_veth",
    "enable_forwarding": "_sysctl",
    "ensure_bridge": "_bridge",
    "ensure_gateway_address": "_addr",
    "enter": "_netns",
    "has_route": "_route",
    "link_info": "links",
    "list_addresses": "_addr",
    "list_links": "links",
    "list_netns": "_netns",
    "list_routes": "_route",
    "netfilter_backend": "netfilter",
    "netns_path": "_netns",
    "open_netns": "_netns",
    "port_vlans": "_bridge",
    "random_veth_name": "_veth",
    "remove_netns": "_netns",
    "require_link": "links",
    "run_in_netns": "_netns",
    "same_netns": "_netns",
    "set_port_vlans": "_bridge",
    "settle_addresses": "_addr",
    "setup_spoofcheck": "netfilter",
    "spoofcheck_present": "netfilter",
    "sysctl_get": "_sysctl",
    "sysctl_set": "_sysctl",
    "sysctl_try_set": "_sysctl",
    "teardown_spoofcheck": "netfilter",
    "vlan_users": "_bridge",
    "wait_oper_up": "links",
}


__all__ = [
    "RT_SCOPE_HOST",
    "RT_SCOPE_LINK",
    "RT_SCOPE_UNIVERSE",
    "AddrInfo",
    "LinkInfo",
    "NetNS",
    "NetNSNotFound",
    "NotANetNSError",
    "RouteInfo",
    "Veth",
    "add_address",
    "add_route",
    "attach_port",
    "bridge_ports",
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
    "netfilter",
    "netfilter_backend",
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
    "vlan_users",
    "wait_oper_up",
]

__getattr__, __dir__ = lazy_package(__name__, _LAZY, __all__)
