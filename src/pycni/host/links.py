"""Link, address and route operations in the calling thread's network namespace.

pyroute2 0.9 binds a socket to the thread and namespace that made it, and these run inside
``NetNS.call`` workers. Opening one costs about as much as a request (a new asyncio event
loop each time), so inside :func:`reuse_sockets` (a NetNS worker's life, one plugin call)
:func:`rtnl` hands out one socket per thread and namespace; outside it every block opens its
own. Errors come back as KernelError naming the object and the operation.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from .._record import FrozenRecord, set_fields
from ..spec import KernelError
from . import _rtnl as rt
from ._netlink import nlattr
from ._rtnl import Rtnl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


class _Sockets(threading.local):
    """Per thread: the reused sockets by (kind, namespace), or None outside reuse_sockets;
    and, inside it, the thread's namespace once looked up (None: look again)."""

    by_netns: dict[tuple[str, int, int], Any] | None = None
    netns: tuple[int, int] | None = None


_sockets = _Sockets()


def _netns_key() -> tuple[int, int]:
    # The thread's own namespace, not the process's: a NetNS worker has left the latter.
    # Inside reuse_sockets it is remembered (a stat per request was a third of a bridge
    # ADD's stat calls): a thread moves only through _netns (setns, unshare), which forgets it.
    key = _sockets.netns
    if key is None:
        st = os.stat("/proc/thread-self/ns/net")  # noqa: PTH116 - hot path, no Path object
        key = (st.st_dev, st.st_ino)
        if _sockets.by_netns is not None:
            _sockets.netns = key
    return key


def forget_netns() -> None:
    """Forget this thread's remembered namespace: call after it moved (setns, unshare)."""
    _sockets.netns = None


def _close_quietly(sock: Any) -> None:
    # A socket that fails to close has nothing left to free.
    with suppress(Exception):
        sock.close()


@contextmanager
def reuse_sockets() -> Iterator[None]:
    """Let :func:`rtnl` and :func:`route_socket` reuse one socket per namespace in this
    thread until the block ends.

    Nested blocks share the outermost one's sockets; they are closed when it ends, in this
    thread (pyroute2 cannot close a socket from another one). Keying by the namespace's
    inode means a thread that moves to another namespace never talks to the old one, and
    an open socket pins its namespace, so the inode cannot be reused meanwhile.
    """
    if _sockets.by_netns is not None:
        yield
        return
    _sockets.by_netns, _sockets.netns = {}, None
    try:
        yield
    finally:
        opened, _sockets.by_netns, _sockets.netns = _sockets.by_netns, None, None
        for sock in opened.values():
            _close_quietly(sock)


@contextmanager
def _cached(kind: str, make: Callable[[], T]) -> Iterator[T]:
    cache = _sockets.by_netns
    if cache is None:
        own = make()
        try:
            yield own
        finally:
            _close_quietly(own)
        return
    key = (kind, *_netns_key())
    found = cache.get(key)
    if found is None:
        found = cache[key] = make()
    sock: T = found
    try:
        yield sock
    except Exception:
        raise  # netlink errors leave the socket usable; replies are matched by sequence
    except BaseException:
        # Interrupted mid-request: a late reply could still be queued, so start afresh.
        if cache.get(key) is sock:
            del cache[key]
        _close_quietly(sock)
        raise


def _iproute() -> Any:
    from pyroute2.iproute import IPRoute

    return IPRoute()


@contextmanager
def rtnl() -> Iterator[Any]:
    """A pyroute2 IPRoute socket in this thread's namespace (reused in reuse_sockets).

    For what :func:`route_socket` does not encode (tc, rules, VLAN filters, route dumps).
    """
    with _cached("pyroute2", _iproute) as ipr:
        yield ipr


@contextmanager
def route_socket() -> Iterator[Rtnl]:
    """A raw rtnetlink socket (:class:`~._rtnl.Rtnl`) in this thread's namespace (reused in
    reuse_sockets): the common path's links, addresses and routes."""
    with _cached("raw", Rtnl) as sock:
        yield sock


def index_of(sock: Any, ifname: str) -> int | None:
    """The ifindex of ``ifname`` (through either kind of socket), or None."""
    if isinstance(sock, Rtnl):
        return sock.index_of(ifname)
    found = sock.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _require(sock: Any, ifname: str) -> int:
    idx = index_of(sock, ifname)
    if idx is None:
        raise KernelError(f"link {ifname!r} not found")
    return idx


def _set(ifname: str, what: str, *, flags: int = 0, change: int = 0,
         attributes: bytes = b"", index: int = 0) -> None:
    """One RTM_NEWLINK change of ``ifname`` (``index``: its ifindex when the caller has it);
    ``what`` names it, ``{}`` standing for the link."""
    with route_socket() as sock:
        idx = index or _require(sock, ifname)
        with kernel_op(what.format(repr(ifname))):
            sock.set_link(idx, flags=flags, change=change, attributes=attributes)


def set_link_up(ifname: str, *, index: int = 0) -> None:
    """Set ``ifname`` administratively up (``index``: its ifindex, if known, saves a lookup)."""
    _set(ifname, "failed to set link {} up", flags=IFF_UP, change=IFF_UP, index=index)


def set_link_down(ifname: str, *, missing_ok: bool = False) -> None:
    """Set ``ifname`` down; with ``missing_ok`` a missing link is not an error."""
    with route_socket() as sock:
        idx = index_of(sock, ifname)
        if idx is None:
            if missing_ok:
                return
            raise KernelError(f"link {ifname!r} not found")
        with kernel_op(f"failed to set link {ifname!r} down"):
            sock.set_link(idx, flags=0, change=IFF_UP)


# --- richer link operations (bridge, ptp and friends) -------------------------------------

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200


def _errno_of(exc: Exception) -> int | None:
    """The errno an OSError or a pyroute2 NetlinkError carries; None for anything else."""
    if isinstance(exc, OSError):
        return exc.errno
    # pyroute2's error type, if pyroute2 was loaded at all (only then can it be raised).
    exceptions = sys.modules.get("pyroute2.netlink.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.NetlinkError):
        return int(exc.code)
    return None


@contextmanager
def kernel_op(what: str, *, ok: tuple[int, ...] = ()) -> Iterator[None]:
    """Translate netlink/OS errors raised in the block into KernelError naming ``what``.

    Errors whose errno is in ``ok`` are swallowed (e.g. ``EEXIST`` for an idempotent add).
    """
    try:
        yield
    except Exception as exc:
        code = _errno_of(exc)
        if code is None:
            raise
        if code in ok:
            return
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
        raise KernelError(f"{what}: {reason or os.strerror(code)}") from exc


class LinkInfo(FrozenRecord):
    """What the kernel says about one link (in the namespace it was read in): the one link
    model of pycni, read by :func:`link_info`, :func:`link_by_index` and :func:`list_links`.

    ``link_index`` is IFLA_LINK: the parent of a macvlan/ipvlan/vlan, or a veth's peer (an
    ifindex in the peer's namespace). ``port`` holds the bridge-port flags (``hairpin``,
    ``isolated``, ...) when the link is enslaved to a bridge, else it is empty. The
    kind-specific fields are set for their kinds only: ``mode`` (a macvlan or ipvlan mode
    name, as a config names it), ``vlan_id`` (vlan), ``table`` (vrf); ``data`` holds every
    IFLA_INFO_DATA attribute. ``parent_bus``/``parent_dev`` name the device a physical link
    hangs off (IFLA_PARENT_DEV_*). ``addresses`` (``"addr/prefix"``, IPv4 first) is filled
    by :func:`~pycni.host.netns_links` only.
    """

    __slots__ = (
        "addresses",
        "alias",
        "allmulti",
        "data",
        "index",
        "kind",
        "link_index",
        "mac",
        "master",
        "mode",
        "mtu",
        "name",
        "operstate",
        "parent_bus",
        "parent_dev",
        "port",
        "promisc",
        "table",
        "txqlen",
        "up",
        "vlan_id",
    )
    name: str
    index: int
    kind: str
    mac: str
    mtu: int
    txqlen: int
    up: bool
    promisc: bool
    allmulti: bool
    operstate: str
    master: int | None
    link_index: int | None
    alias: str
    parent_bus: str
    parent_dev: str
    port: dict[str, int]
    mode: str
    vlan_id: int | None
    table: int | None
    data: dict[str, Any]
    addresses: tuple[str, ...]

    def __init__(self, name: str, index: int, kind: str = "", mac: str = "", mtu: int = 0,  # noqa: PLR0917
                 txqlen: int = 0, up: bool = False, promisc: bool = False, allmulti: bool = False,
                 operstate: str = "UNKNOWN", master: int | None = None,
                 link_index: int | None = None, alias: str = "", parent_bus: str = "",
                 parent_dev: str = "", port: dict[str, int] | None = None, mode: str = "",
                 vlan_id: int | None = None, table: int | None = None,
                 data: dict[str, Any] | None = None, addresses: tuple[str, ...] = ()) -> None:
        set_fields(self, name, index, kind, mac, mtu, txqlen, up, promisc, allmulti, operstate,
                   master, link_index, alias, parent_bus, parent_dev, {} if port is None else port,
                   mode, vlan_id, table, {} if data is None else data, addresses)


#: ipvlan modes by name, as IFLA_IPVLAN_MODE numbers them.
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
_IPVLAN_MODE_NAMES = {v: k for k, v in IPVLAN_MODES.items()}


_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
#: IFLA_MACVLAN_MODE values by the names configs use.
_MACVLAN_MODE_NAMES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}
#: IFLA_BRPORT_* numbers of the bridge-port flags and numbers LinkInfo.port reports.
_BRPORT_NAMES = {1: "state", 2: "priority", 3: "cost", 4: "mode", 5: "guard", 6: "protect",
                 7: "fast_leave", 8: "learning", 9: "unicast_flood", 10: "proxyarp",
                 11: "learning_sync", 12: "proxyarp_wifi", 15: "designated_port",
                 16: "designated_cost", 17: "id", 18: "no", 19: "topology_change_ack",
                 20: "config_pending", 25: "multicast_router", 27: "mcast_flood",
                 28: "mcast_to_ucast", 29: "vlan_tunnel", 30: "bcast_flood",
                 31: "group_fwd_mask", 32: "neigh_suppress", 33: "isolated",
                 35: "mrp_ring_open", 36: "mrp_in_open", 39: "locked", 40: "mab"}
#: The kind-specific IFLA_INFO_DATA attribute (type 1 in each) LinkInfo decodes.
_INFO_DATA_FIELD = {"macvlan": "IFLA_MACVLAN_MODE", "macvtap": "IFLA_MACVLAN_MODE",
                    "ipvlan": "IFLA_IPVLAN_MODE", "vlan": "IFLA_VLAN_ID",
                    "vrf": "IFLA_VRF_TABLE"}


#: IFLA_VXLAN_* attributes the overlay compares (what cannot change in place).
_VXLAN_ID, _VXLAN_LINK, _VXLAN_LOCAL, _VXLAN_LEARNING, _VXLAN_PORT, _VXLAN_LOCAL6 = (
    1, 3, 4, 7, 15, 17)


def _vxlan_data(found: dict[int, bytes]) -> dict[str, Any]:
    """A vxlan link's identity, under the kernel's attribute names."""
    out: dict[str, Any] = {}
    if _VXLAN_ID in found:
        out["IFLA_VXLAN_ID"] = rt.as_u32(found[_VXLAN_ID])
    if _VXLAN_LINK in found:
        out["IFLA_VXLAN_LINK"] = rt.as_u32(found[_VXLAN_LINK])
    if _VXLAN_LEARNING in found:
        out["IFLA_VXLAN_LEARNING"] = rt.as_u32(found[_VXLAN_LEARNING])
    if _VXLAN_PORT in found:  # network byte order, unlike the others
        out["IFLA_VXLAN_PORT"] = int.from_bytes(found[_VXLAN_PORT], "big")
    for number, key in ((_VXLAN_LOCAL, "IFLA_VXLAN_LOCAL"), (_VXLAN_LOCAL6, "IFLA_VXLAN_LOCAL6")):
        if number in found:
            out[key] = str(ipaddress.ip_address(found[number]))
    return out


def _link_info(body: bytes) -> LinkInfo:
    """A LinkInfo from an RTM_NEWLINK message body (ifinfomsg and its attributes)."""
    _, _, index, flags, _ = rt.IFINFO.unpack_from(body)
    attrs = rt.attrs(body, rt.IFINFO.size)
    kind = ""
    port: dict[str, int] = {}
    data: dict[str, Any] = {}
    mode = ""
    vlan_id = table = None
    info = attrs.get(rt.IFLA_LINKINFO)
    if info is not None:
        nested = rt.attrs(info)
        kind = rt.as_str(nested.get(rt.IFLA_INFO_KIND, b""))
        field_name = _INFO_DATA_FIELD.get(kind)
        info_data = nested.get(rt.IFLA_INFO_DATA)
        if kind == "vxlan" and info_data is not None:
            data = _vxlan_data(rt.attrs(info_data))
        elif field_name is not None and info_data is not None:
            raw = rt.attrs(info_data).get(1)
            if raw is not None:
                value = rt.as_u32(raw)
                data[field_name] = value
                if kind in ("macvlan", "macvtap"):
                    mode = _MACVLAN_MODE_NAMES.get(value, str(value))
                    data[field_name] = mode
                elif kind == "ipvlan":
                    mode = _IPVLAN_MODE_NAMES.get(value, "")
                elif kind == "vlan":
                    vlan_id = value
                else:
                    table = value
        slave = nested.get(rt.IFLA_INFO_SLAVE_DATA)
        if rt.as_str(nested.get(rt.IFLA_INFO_SLAVE_KIND, b"")) == "bridge" and slave:
            for number, raw in rt.attrs(slave).items():
                name = _BRPORT_NAMES.get(number)
                if name is not None and len(raw) in (1, 2, 4, 8):
                    port[name] = rt.as_u32(raw)
            port["hairpin"] = port.get("mode", 0)
    operstate = attrs.get(rt.IFLA_OPERSTATE)
    master = attrs.get(rt.IFLA_MASTER)
    link = attrs.get(rt.IFLA_LINK)
    return LinkInfo(
        name=rt.as_str(attrs.get(rt.IFLA_IFNAME, b"")),
        index=index,
        kind=kind,
        mac=rt.as_mac(attrs.get(rt.IFLA_ADDRESS, b"")),
        mtu=rt.as_u32(attrs.get(rt.IFLA_MTU, b"")),
        txqlen=rt.as_u32(attrs.get(rt.IFLA_TXQLEN, b"")),
        up=bool(flags & IFF_UP),
        promisc=bool(flags & IFF_PROMISC),
        allmulti=bool(flags & IFF_ALLMULTI),
        operstate=(_OPERSTATES[operstate[0]] if operstate and operstate[0] < len(_OPERSTATES)
                   else "UNKNOWN"),
        master=rt.as_u32(master) if master else None,
        link_index=rt.as_u32(link) if link else None,
        alias=rt.as_str(attrs.get(rt.IFLA_IFALIAS, b"")),
        parent_bus=rt.as_str(attrs.get(rt.IFLA_PARENT_DEV_BUS_NAME, b"")),
        parent_dev=rt.as_str(attrs.get(rt.IFLA_PARENT_DEV_NAME, b"")),
        port=port,
        mode=mode,
        vlan_id=vlan_id,
        table=table,
        data=data,
    )


def link_info(ifname: str) -> LinkInfo | None:
    """The link ``ifname`` in this thread's namespace, or None if there is none."""
    with route_socket() as sock, kernel_op(f"failed to read link {ifname!r}"):
        body = sock.get_link(name=ifname)
        return None if body is None else _link_info(body)
    return None  # pragma: no cover - kernel_op raised


def link_by_index(index: int) -> LinkInfo | None:
    """The link with ifindex ``index``, or None."""
    with route_socket() as sock, kernel_op(f"failed to read link #{index}"):
        body = sock.get_link(index=index)
        return None if body is None else _link_info(body)
    return None  # pragma: no cover - kernel_op raised


def name_of(ipr: Any, index: int) -> str | None:
    """The name of ifindex ``index`` on the pyroute2 socket ``ipr``, or None if there is none."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return str(ipr.link("get", index=index)[0].get("IFLA_IFNAME"))
    except NetlinkError:
        return None


def require_link(ifname: str, where: str = "") -> LinkInfo:
    """Like :func:`link_info` but a missing link is a KernelError (``where`` names the netns)."""
    info = link_info(ifname)
    if info is None:
        suffix = f" in {where}" if where else ""
        raise KernelError(f"link {ifname!r} not found{suffix}")
    return info


def list_links() -> list[LinkInfo]:
    """Every link in this thread's namespace, by ifindex."""
    with route_socket() as sock, kernel_op("failed to list links"):
        return sorted((_link_info(m) for m in sock.links()), key=lambda i: i.index)
    return []  # pragma: no cover


def delete_link(ifname: str, *, missing_ok: bool = True) -> bool:
    """Delete ``ifname``; returns False if it was not there (an error unless ``missing_ok``)."""
    with route_socket() as sock:
        idx = index_of(sock, ifname)
        if idx is None:
            if missing_ok:
                return False
            raise KernelError(f"link {ifname!r} not found")
        with kernel_op(f"failed to delete link {ifname!r}", ok=(errno.ENODEV,)):
            sock.del_link(idx)
        return True


def set_promisc(ifname: str, on: bool) -> None:
    """Set or clear IFF_PROMISC on ``ifname``."""
    _set(ifname, "failed to set promiscuous mode on {}", flags=IFF_PROMISC if on else 0,
         change=IFF_PROMISC)


def set_mac(ifname: str, mac: str) -> None:
    """Set the hardware address of ``ifname``.

    Setting a bridge's MAC (even to its current value) pins it: otherwise the kernel gives
    the bridge the lowest MAC of its ports, and it changes as containers come and go.
    """
    _set(ifname, f"failed to set MAC {mac} on {{}}",
         attributes=nlattr(rt.IFLA_ADDRESS, rt.mac_bytes(mac)))


def set_alias(ifname: str, alias: str) -> None:
    """Set ``ifname``'s ifalias (IFLA_IFALIAS; "" clears it)."""
    # An empty IFLA_IFALIAS removes the alias; a NUL-terminated one would be stored as is.
    _set(ifname, "failed to set the alias of {}",
         attributes=nlattr(rt.IFLA_IFALIAS, alias.encode()))


def set_link_attrs(ifname: str, *, mac: str | None = None, mtu: int | None = None,
                   promisc: bool | None = None, allmulti: bool | None = None,
                   txqlen: int | None = None) -> None:
    """Change the given attributes of ``ifname``, one request each; an error names the one
    that failed (the earlier ones stay changed)."""
    with route_socket() as sock:
        idx = _require(sock, ifname)
        changes: list[tuple[str, dict[str, Any]]] = []
        if mac is not None:
            changes.append(("MAC address",
                            {"attributes": nlattr(rt.IFLA_ADDRESS, rt.mac_bytes(mac))}))
        if mtu is not None:
            changes.append(("MTU", {"attributes": rt.u32(rt.IFLA_MTU, mtu)}))
        if txqlen is not None:
            changes.append(("txQLen", {"attributes": rt.u32(rt.IFLA_TXQLEN, txqlen)}))
        for name, flag, value in (("promiscuous mode", IFF_PROMISC, promisc),
                                  ("all-multicast mode", IFF_ALLMULTI, allmulti)):
            if value is not None:
                changes.append((name, {"flags": flag if value else 0, "change": flag}))
        for name, kwargs in changes:
            with kernel_op(f"failed to set {name} of {ifname!r}"):
                sock.set_link(idx, **kwargs)


def wait_oper_up(ifname: str, timeout: float = 2.6) -> LinkInfo:
    """Poll until ``ifname`` is operationally up; KernelError with its state if it is not.

    Carrier and operstate settle asynchronously (linkwatch), so a freshly enslaved veth can
    read DOWN for a moment even though both ends are up.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = require_link(ifname)
        if info.operstate == "UP":
            return info
        if time.monotonic() > deadline:
            raise KernelError(f"bridge port {ifname!r} is in state {info.operstate}, expected UP")
        time.sleep(0.02)
