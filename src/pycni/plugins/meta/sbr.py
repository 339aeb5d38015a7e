"""sbr: source-based routing for a container interface.

Example config (chained after the plugin that created the interface)::

    {"type": "sbr", "table": 500}

For each address prevResult gives the interface, ADD (inside the container) adds a rule
``from <addr>/32 lookup <table>``, a default route via the address's gateway in that table,
and moves the interface's main-table routes there. Without ``table`` each address gets the
first free table from 100 on, like the reference; with it, all addresses share that table.
DEL deletes the rules whose source is one of the interface's (or prevResult's) addresses,
or that point to ``table``, and flushes those tables. The reference's VRF handling needs
the vrf module, which this kernel lacks, so pycni does not implement it (docs/compat.md).
"""

from __future__ import annotations

from ...host import (
    NetNSNotFound,
    SourceRoute,
    Undo,
    link_info,
    list_addresses,
    list_rules,
    remove_source_rules,
    routes_in_table,
    setup_source_routing,
)
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import InvalidNetworkConfig, KernelError, Result
from .._fields import UINT32_MAX, int_field, require_prev_result


def _table(args: CmdArgs) -> int | None:
    table = int_field(args.conf.raw, "table", minimum=1, maximum=UINT32_MAX)
    if table is not None and table in (253, 254, 255):
        raise InvalidNetworkConfig(f'invalid "table": {table} is a kernel-reserved or '
                                   "out-of-range table")
    return table


def source_routes(args: CmdArgs, result: Result) -> list[SourceRoute]:
    """prevResult's addresses on CNI_IFNAME (an address naming no interface counts too)."""
    if not result.ips:
        raise InvalidNetworkConfig(f"no IP addresses supplied on interface: {args.ifname}")
    out = []
    for ipc in result.ips:
        idx = ipc.interface
        if (idx is not None and 0 <= idx < len(result.interfaces)
                and result.interfaces[idx].name != args.ifname):
            continue
        out.append(SourceRoute(ipc.address, ipc.gateway))
    return out


def _addresses(ifname: str) -> list[str]:
    """The bare addresses on ``ifname`` (none if it is gone)."""
    if link_info(ifname) is None:
        return []
    return [str(a.address.ip) for a in list_addresses(ifname)]


class Sbr(Plugin):
    """The ``sbr`` plugin."""

    type_name = "sbr"

    def add(self, args: CmdArgs) -> Result:
        table = _table(args)
        prev = require_prev_result(args, "this plugin must be called as chained plugin")
        routes = source_routes(args, prev)
        with enter_netns(args.netns) as ns, Undo() as undo:
            undo.push(f"remove the source rules of {args.ifname}", ns.call, remove_source_rules,
                      [str(r.address.ip) for r in routes], table)
            ns.call(setup_source_routing, args.ifname, routes, table)
        return prev

    def delete(self, args: CmdArgs) -> None:
        try:
            table = _table(args)
        except InvalidNetworkConfig:
            # ADD refused it, so no rule points there; and a reserved table (main!) must
            # never be flushed or have its rules removed.
            table = None
        prev = args.conf.prev_result
        known = [str(ipc.address.ip) for ipc in prev.ips] if prev is not None else []
        try:
            with enter_netns(args.netns) as ns:
                sources = known + ns.call(_addresses, args.ifname)
                ns.call(remove_source_rules, sources, table)
        except NetNSNotFound:
            return

    def check(self, args: CmdArgs) -> None:
        table = _table(args)
        prev = require_prev_result(args, "this plugin must be called as chained plugin")
        wanted = source_routes(args, prev)
        with enter_netns(args.netns) as ns:
            found = ns.call(list_rules)
            for entry in wanted:
                ip = str(entry.address.ip)
                match = [r for r in found if r.src == ip
                         and r.src_len == entry.address.max_prefixlen
                         and (table is None or r.table == table)]
                if not match:
                    raise KernelError(f"no rule 'from {ip} lookup "
                                      f"{table if table is not None else '<table>'}' found")
                if not ns.call(routes_in_table, match[0].table):
                    raise KernelError(f"routing table {match[0].table} for {ip} is empty")


main = Sbr.main
