"""Applying an IPAM result to an interface, and checking it is still applied (CHECK).

This mirrors what every main plugin does with its IPAM result (``ConfigureIface`` in the
reference plugins): addresses for this interface, IPv6 enabled where needed, the link up,
DAD settled, then the routes (a route without a gateway uses the first gateway of its
family from ``ips``).
"""

from __future__ import annotations

from ..spec import IPAddress, KernelError, Result
from ._addr import add_address, list_addresses, settle_addresses
from ._route import RT_TABLE_MAIN, RouteInfo, add_route, list_routes
from ._sysctl import sysctl_get, sysctl_set
from .links import set_link_up


def _enable_ipv6(ifname: str) -> None:
    # A container image (or a runtime) may have disabled IPv6; an IPv6 address cannot be
    # added then, and without lo's ::1 much software misbehaves.
    for name in ("lo", ifname):
        key = f"net/ipv6/conf/{name}/disable_ipv6"
        try:
            value = sysctl_get(key)
        except KernelError:
            continue
        if value != "0":
            sysctl_set(key, "0")


def configure_iface(ifname: str, result: Result, *, index: int = 0) -> None:
    """Put ``result``'s addresses for ``ifname`` on it, set it up and add the routes
    (``index``: the link's ifindex when the caller has it, which spares the lookups).

    An IP whose ``interface`` index names another interface is an error; one without an
    index is skipped, as in the reference.
    """
    if not result.interfaces:
        raise KernelError(f"cannot configure {ifname!r}: the result has no interfaces")
    gateways: dict[int, IPAddress] = {}
    v6_enabled = False
    for ipc in result.ips:
        if ipc.interface is None:
            continue
        if not 0 <= ipc.interface < len(result.interfaces) or \
                result.interfaces[ipc.interface].name != ifname:
            raise KernelError(f"cannot add {ipc.address} to {ifname!r}: its interface index "
                              f"{ipc.interface} names another interface")
        if ipc.family == 6 and not v6_enabled:
            _enable_ipv6(ifname)
            v6_enabled = True
        add_address(ifname, ipc.address, index=index)
        if ipc.gateway is not None:
            gateways.setdefault(ipc.gateway.version, ipc.gateway)
    set_link_up(ifname, index=index)
    if 6 in gateways:
        settle_addresses(ifname, index=index)
    for route in result.routes:
        gw = route.gw if route.gw is not None else gateways.get(route.dst.version)
        add_route(route.dst.network, ifname=ifname, gateway=gw, scope=route.scope,
                  table=route.table, priority=route.priority, mtu=route.mtu,
                  advmss=route.advmss, index=index)


def _routes_for(family: int, result: Result) -> list[RouteInfo]:
    """The routes of ``family`` that traffic of ``result``'s addresses can use: the main
    table's, and those of tables that a rule for one of the addresses selects (a chained
    sbr moves the interface's routes there)."""
    from ._rules import list_rules  # CHECK only: ADD need not load the rule reader

    sources = {str(ipc.address.ip) for ipc in result.ips}
    tables = {RT_TABLE_MAIN} | {rule.table for rule in list_rules()
                                if rule.src in sources and rule.src_len in (32, 128)}
    return [r for table in sorted(tables) for r in list_routes(family, table=table)]


def check_iface_ips(ifname: str, result: Result) -> None:
    """CHECK: every address in ``result`` is on ``ifname`` and its subnet is routed."""
    present = {a.address for a in list_addresses(ifname)}
    for ipc in result.ips:
        if ipc.address not in present:
            raise KernelError(f"CHECK: {ifname!r} should have address {ipc.address}, found "
                              f"{sorted(str(a) for a in present) or 'none'}")
        net = ipc.address.network
        if not any(r.dst == net for r in _routes_for(net.version, result)):
            raise KernelError(f"CHECK: no route to {net} for address {ipc.address} on {ifname!r}")


def check_routes(result: Result) -> None:
    """CHECK: every route in ``result`` is in the main table or a table of a rule for one
    of its addresses (with its gateway)."""
    for route in result.routes:
        dst = route.dst.network
        default = dst.prefixlen == 0
        found = [r for r in _routes_for(dst.version, result)
                 if r.dst == dst and (default or route.gw is None or r.gateway == route.gw)]
        if not found:
            via = f" via {route.gw}" if route.gw is not None else ""
            raise KernelError(f"CHECK: expected route {dst}{via} is not in the routing table")


