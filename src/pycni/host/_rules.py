"""Policy routing for source-based routing: rules ``from <ip> lookup <table>`` and tables.

Runs in the calling thread's namespace (the container's, inside ``NetNS.call``). Table
numbers are chosen like the reference sbr plugin: the first number from 100 on that no rule
points to and no route lives in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..spec import KernelError
from .links import index_of, rtnl

#: The reference plugin's first candidate table.
FIRST_TABLE = 100
#: Kernel-reserved tables (unspec, default, main, local) are never picked.
_RESERVED_TABLES = frozenset({0, 253, 254, 255})
_MAIN_TABLE = 254
_FAMILIES = (socket.AF_INET, socket.AF_INET6)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class SourceRoute:
    """One address to route by source: the address (with prefix) and its gateway."""

    address: IPInterface
    gateway: IPAddress | None = None


@dataclass(frozen=True)
class Rule:
    """A policy rule as the kernel reports it."""

    family: int
    table: int
    src: str | None
    src_len: int
    priority: int


def _table_of(msg: Any) -> int:
    # Tables above 255 only appear in the FRA_TABLE/RTA_TABLE attribute.
    attr = msg.get("FRA_TABLE") if msg.get("FRA_TABLE") is not None else msg.get("RTA_TABLE")
    return int(attr if attr is not None else msg["table"])


def list_rules() -> list[Rule]:
    """Every IPv4 and IPv6 policy rule in this namespace."""
    with rtnl() as ipr:
        return [Rule(fam, _table_of(m), m.get("FRA_SRC"), int(m["src_len"]),
                     int(m.get("FRA_PRIORITY") or 0))
                for fam in _FAMILIES for m in ipr.get_rules(family=fam)]


def _all_routes(ipr: Any) -> list[Any]:
    out: list[Any] = []
    for fam in _FAMILIES:
        out.extend(ipr.route("dump", family=fam))
    return out


def first_free_table(start: int, used: Iterable[int]) -> int:
    """The first table number >= ``start`` not in ``used`` and not kernel-reserved."""
    taken = set(used) | _RESERVED_TABLES
    table = start
    while table in taken:
        table += 1
    return table


def _copy_route(ipr: Any, msg: Any, table: int) -> None:
    spec: dict[str, Any] = {
        "family": msg["family"], "dst_len": msg["dst_len"], "table": table,
        "scope": msg["scope"], "proto": msg["proto"], "type": msg["type"],
        "oif": msg.get("RTA_OIF"),
    }
    for attr, key in (("RTA_DST", "dst"), ("RTA_GATEWAY", "gateway"),
                      ("RTA_PREFSRC", "prefsrc"), ("RTA_PRIORITY", "priority")):
        if msg.get(attr) is not None:
            spec[key] = msg.get(attr)
    # Flags (e.g. RTNH_F_LINKDOWN) describe kernel state; replaying them is EINVAL.
    ipr.route("replace", **spec)


def _route_matches(msg: Any, addr: IPInterface) -> bool:
    """The reference plugin's test: the route's source or gateway is in the address's subnet,
    or it names neither (a plain interface route)."""
    src, gw = msg.get("RTA_PREFSRC"), msg.get("RTA_GATEWAY")
    if src is None and gw is None:
        return True
    return any(v is not None and ipaddress.ip_address(v) in addr.network for v in (src, gw))


def setup_source_routing(ifname: str, routes: list[SourceRoute], table: int | None) -> list[int]:
    """Add a rule and table per address and move ``ifname``'s main-table routes into them.

    With ``table`` every address uses that table; otherwise each gets the next free one.
    Returns the tables used, in order.
    """
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            raise KernelError(f"cannot find network interface {ifname!r} in the container")
        try:
            every = _all_routes(ipr)
            used = {_table_of(m) for m in every}
            used |= {_table_of(m) for fam in _FAMILIES for m in ipr.get_rules(family=fam)}
            link_routes = [m for m in every
                           if m.get("RTA_OIF") == idx and _table_of(m) == _MAIN_TABLE]
            tables: list[int] = []
            current = table if table is not None else first_free_table(FIRST_TABLE, used)
            for entry in routes:
                addr = entry.address
                fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
                # No priority, as the reference: the kernel puts the rule just before the
                # second one of the list (32765 before "from all lookup main"). pyroute2
                # would otherwise send its own default, 32000; None leaves the attribute out.
                ipr.rule("add", family=fam, src=str(addr.ip), src_len=addr.max_prefixlen,
                         table=current, priority=None)
                if entry.gateway is not None:
                    default = "0.0.0.0" if addr.version == 4 else "::"  # noqa: S104 - a route
                    ipr.route("replace", family=fam, dst=default, dst_len=0,
                              gateway=str(entry.gateway), oif=idx, table=current)
                for msg in link_routes:
                    if _route_matches(msg, addr):
                        _copy_route(ipr, msg, current)
                tables.append(current)
                if table is None:
                    used.add(current)
                    current = first_free_table(current + 1, used)
            # Removed only after copying, so several addresses of one subnet all find them.
            for msg in link_routes:
                _delete_route(ipr, msg)
        except KernelError:
            raise
        except Exception as exc:
            raise KernelError(f"failed to set up source-based routing on {ifname!r}: "
                              f"{exc}") from exc
        return tables


def _delete_route(ipr: Any, msg: Any) -> None:
    # The kernel matches a delete on scope and type too; pyroute2 would send "universe".
    spec: dict[str, Any] = {"family": msg["family"], "dst_len": msg["dst_len"],
                            "table": _table_of(msg), "oif": msg.get("RTA_OIF"),
                            "scope": msg["scope"], "type": msg["type"]}
    if msg.get("RTA_DST") is not None:
        spec["dst"] = msg.get("RTA_DST")
    if msg.get("RTA_PRIORITY") is not None:
        spec["priority"] = msg.get("RTA_PRIORITY")
    try:
        ipr.route("del", **spec)
    except Exception as exc:  # a route that went with its link is fine
        if getattr(exc, "code", None) not in (3, 19):  # ESRCH, ENODEV
            raise


def remove_source_rules(sources: Iterable[str], table: int | None) -> list[int]:
    """Delete rules whose source is one of ``sources`` (or whose table is ``table``) and the
    routes in the tables they pointed to. Returns the tables emptied."""
    wanted = {str(ipaddress.ip_address(s)) for s in sources}
    emptied: list[int] = []
    with rtnl() as ipr:
        for fam in _FAMILIES:
            for msg in ipr.get_rules(family=fam):
                src, tbl = msg.get("FRA_SRC"), _table_of(msg)
                mine = (src is not None and str(ipaddress.ip_address(src)) in wanted
                        and msg["src_len"] == (32 if fam == socket.AF_INET else 128))
                if not (mine or (table is not None and tbl == table)):
                    continue
                spec: dict[str, Any] = {"family": fam, "table": tbl,
                                        "priority": msg.get("FRA_PRIORITY")}
                if src is not None:
                    spec.update(src=src, src_len=msg["src_len"])
                try:
                    ipr.rule("del", **spec)
                except Exception as exc:
                    raise KernelError(f"failed to delete rule from {src} lookup {tbl}: "
                                      f"{exc}") from exc
                if tbl not in _RESERVED_TABLES and tbl not in emptied:
                    emptied.append(tbl)
        for msg in _all_routes(ipr):
            if _table_of(msg) in emptied:
                _delete_route(ipr, msg)
    return emptied


def routes_in_table(table: int) -> list[str]:
    """Destinations of the routes in ``table`` (``"default"`` for a default route)."""
    with rtnl() as ipr:
        out = []
        for msg in _all_routes(ipr):
            if _table_of(msg) != table:
                continue
            dst = msg.get("RTA_DST")
            out.append(f"{dst}/{msg['dst_len']}" if dst else "default")
        return out
