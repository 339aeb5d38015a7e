"""The only package that talks to the kernel: netns, links, addresses, routes, sysctl, netfilter.

The public names are listed once, as the imports under ``if TYPE_CHECKING:`` below: type
checkers read them there (the two file-level comments make them re-exports for mypy and
ruff), and :func:`pycni._lazy.lazy_init` reads the same lines to build ``__all__`` and to
import each name from its submodule on first use (PEP 562), so a plugin executable loads
only the kernel code it calls.
"""
# mypy: implicit-reexport
# ruff: noqa: F401

from __future__ import annotations

from .._lazy import lazy_init
from . import _pyroute2

# Before anything imports pyroute2 (only this package does): see _pyroute2.
_pyroute2.install()

# A plain constant rather than typing's: importing typing costs a plugin start ~10 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import netfilter
    from ._addr import (
        add_address,
        ensure_gateway_address,
        list_addresses,
    )
    from ._arp import announce_addresses, send_gratuitous_arp, send_unsolicited_na
    from ._bridge import (
        attach_port,
        bridge_ports,
        bridge_problem,
        ensure_bridge,
        set_port_vlans,
        vlan_users,
    )
    from ._burst import BurstCounters
    from ._hostdev import (
        Selector,
        check_kernelpath,
        device_id_kind,
        find_device,
        is_dpdk_bound,
        move_in,
        move_out,
        restore_state,
    )
    from ._iface import check_iface_ips, check_routes, configure_iface
    from ._inspect import (
        NamespaceState,
        QdiscEntry,
        RouteEntry,
        RuleEntry,
        namespace_state,
        netns_links,
    )
    from ._move import (
        IfaceSnapshot,
        add_addresses,
        add_proxy_neighbour,
        delete_proxy_neighbour,
        host_routes_to,
        iface_sysctls,
        move_link,
        remove_addresses,
        rename_link,
        set_iface_sysctls,
        snapshot_iface,
        take_over_routes,
    )
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
    )
    from ._overlay import (
        VXLAN_OVERHEAD,
        FdbEntry,
        Neighbour,
        delete_fdb,
        delete_neighbour,
        ensure_addresses,
        ensure_vxlan,
        list_fdb,
        list_neighbours,
        replace_fdb,
        replace_neighbour,
        vxlan_differences,
    )
    from ._route import (
        RT_SCOPE_HOST,
        RT_SCOPE_LINK,
        RT_SCOPE_UNIVERSE,
        RTPROT_PYCNI,
        RouteInfo,
        add_route,
        connected_device,
        default_route_interface,
        del_route,
        list_routes,
        replace_route,
    )
    from ._rules import (
        SourceRoute,
        list_rules,
        remove_source_rules,
        routes_in_table,
        setup_source_routing,
    )
    from ._sublink import (
        MACVLAN_MODES,
        SubLink,
        adopt_link,
        create_sublink,
        kind_supported,
        set_macvlan_bcqueuelen,
    )
    from ._sysctl import enable_forwarding, sysctl_get, sysctl_set, sysctl_try_set
    from ._tap import configure_tap, create_tap, create_tap_labelled
    from ._tc import (
        MAX_BURST_BYTES,
        RATE64_MAX,
        Shaping,
        buffer_ticks,
        clear_root_qdisc,
        create_ifb,
        has_ingress_redirect,
        htb_burst_bytes,
        queue_limit,
        root_qdisc,
        shape_egress,
        shape_ingress,
    )
    from ._undo import Undo
    from ._veth import (
        DeleteInfo,
        Veth,
        create_veth,
        current_netns_fd,
        delete_veth_peer,
        read_for_delete,
        start_early_deletes,
        stop_early_deletes,
    )
    from ._vrf import create_vrf, enslave_to_vrf, find_vrf, release_from_vrf, vrf_members
    from .links import (
        IPVLAN_MODES,
        LinkInfo,
        delete_link,
        link_by_index,
        link_info,
        list_links,
        require_link,
        reuse_sockets,
        set_alias,
        set_link_attrs,
        set_link_down,
        set_link_up,
        wait_oper_up,
    )
    from .netfilter import (
        netfilter_backend,
        setup_spoofcheck,
        spoofcheck_present,
        teardown_spoofcheck,
    )

__getattr__, __dir__, __all__ = lazy_init(__name__, __file__)
