"""Link, address and route operations in the calling thread's network namespace.

pyroute2 0.9 binds a socket to the thread and namespace that made it, and these run inside
``NetNS.call`` workers. Opening one costs about as much as a request (a new asyncio event
loop each time), so inside :func:`reuse_sockets` (a NetNS worker's life, one plugin call)
:func:`rtnl` hands out one socket per thread and namespace; outside it every block opens its
own. Errors come back as KernelError naming the object and the operation.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from ..spec import KernelError


class _Sockets(threading.local):
    """Per thread: the reused IPRoute sockets by namespace, or None outside reuse_sockets."""

    by_netns: dict[tuple[int, int], Any] | None = None


_sockets = _Sockets()


def _netns_key() -> tuple[int, int]:
    # The thread's own namespace, not the process's: a NetNS worker has left the latter.
    st = os.stat("/proc/thread-self/ns/net")  # noqa: PTH116 - hot path, no Path object
    return st.st_dev, st.st_ino


def _close_quietly(ipr: Any) -> None:
    # A socket that fails to close has nothing left to free.
    with suppress(Exception):
        ipr.close()


@contextmanager
def reuse_sockets() -> Iterator[None]:
    """Let :func:`rtnl` reuse one socket per namespace in this thread until the block ends.

    Nested blocks share the outermost one's sockets; they are closed when it ends, in this
    thread (pyroute2 cannot close a socket from another one). Keying by the namespace's
    inode means a thread that moves to another namespace never talks to the old one, and
    an open socket pins its namespace, so the inode cannot be reused meanwhile.
    """
    if _sockets.by_netns is not None:
        yield
        return
    _sockets.by_netns = {}
    try:
        yield
    finally:
        opened, _sockets.by_netns = _sockets.by_netns, None
        for ipr in opened.values():
            _close_quietly(ipr)


@contextmanager
def rtnl() -> Iterator[Any]:
    """A pyroute2 IPRoute socket in this thread's namespace (reused in reuse_sockets)."""
    from pyroute2.iproute import IPRoute

    cache = _sockets.by_netns
    if cache is None:
        ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()
        return
    key = _netns_key()
    ipr = cache.get(key)
    if ipr is None:
        ipr = cache[key] = IPRoute()
    try:
        yield ipr
    except Exception:
        raise  # netlink errors leave the socket usable; replies are matched by sequence
    except BaseException:
        # Interrupted mid-request: a late reply could still be queued, so start afresh.
        if cache.get(key) is ipr:
            del cache[key]
        _close_quietly(ipr)
        raise


def index_of(ipr: Any, ifname: str) -> int | None:
    """The ifindex of ``ifname``, or None."""
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def link_msg(ipr: Any, ifname: str) -> Any | None:
    """The kernel's RTM_NEWLINK message for ``ifname``, or None if there is no such link.

    One request by name: looking the index up first and then reading the link by index
    costs a second netlink round trip for the same answer.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return ipr.link("get", ifname=ifname)[0]
    except (NetlinkError, IndexError):
        return None  # what link_lookup reports as "no such link", too


def _require(ipr: Any, ifname: str) -> int:
    idx = index_of(ipr, ifname)
    if idx is None:
        raise KernelError(f"link {ifname!r} not found")
    return idx


def set_link_up(ifname: str) -> None:
    """Set ``ifname`` administratively up."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        try:
            ipr.link("set", index=idx, state="up")
        except Exception as exc:
            raise KernelError(f"failed to set link {ifname!r} up: {exc}") from exc


def set_link_down(ifname: str, *, missing_ok: bool = False) -> None:
    """Set ``ifname`` down; with ``missing_ok`` a missing link is not an error."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            if missing_ok:
                return
            raise KernelError(f"link {ifname!r} not found")
        try:
            ipr.link("set", index=idx, state="down")
        except Exception as exc:
            raise KernelError(f"failed to set link {ifname!r} down: {exc}") from exc


# --- richer link operations (bridge, ptp and friends) -------------------------------------

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200


@contextmanager
def kernel_op(what: str, *, ok: tuple[int, ...] = ()) -> Iterator[None]:
    """Translate netlink/OS errors raised in the block into KernelError naming ``what``.

    Errors whose errno is in ``ok`` are swallowed (e.g. ``EEXIST`` for an idempotent add).
    """
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        if exc.code in ok:
            return
        raise KernelError(f"{what}: {os.strerror(exc.code)}") from exc
    except OSError as exc:
        if exc.errno in ok:
            return
        raise KernelError(f"{what}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class LinkInfo:
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

    name: str
    index: int
    kind: str = ""
    mac: str = ""
    mtu: int = 0
    txqlen: int = 0
    up: bool = False
    promisc: bool = False
    allmulti: bool = False
    operstate: str = "UNKNOWN"
    master: int | None = None
    link_index: int | None = None
    alias: str = ""
    parent_bus: str = ""
    parent_dev: str = ""
    port: dict[str, int] = field(default_factory=dict)
    mode: str = ""
    vlan_id: int | None = None
    table: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()


#: ipvlan modes by name, as IFLA_IPVLAN_MODE numbers them.
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
_IPVLAN_MODE_NAMES = {v: k for k, v in IPVLAN_MODES.items()}


def _slots(msg: Any) -> dict[str, Any]:
    """A message's attributes by name, still encoded.

    pyroute2's ``msg.get(name)`` walks the attribute list for every name; one pass here
    and decoding only the attributes read makes reading a link about twice as fast.
    """
    return {slot.cell[0]: slot for slot in msg["attrs"]}


def _value(slots: dict[str, Any], name: str) -> Any:
    slot = slots.get(name)
    return None if slot is None else slot.get_value()


def _link_info(msg: Any) -> LinkInfo:
    attrs = _slots(msg)
    linkinfo = _value(attrs, "IFLA_LINKINFO")
    kind = ""
    port: dict[str, int] = {}
    data: dict[str, Any] = {}
    if linkinfo is not None:
        kind = linkinfo.get("IFLA_INFO_KIND") or ""
        info_data = linkinfo.get("IFLA_INFO_DATA")
        if info_data is not None and not isinstance(info_data, (str, bytes)):
            data = {k: v for k, v in info_data["attrs"] if k != "UNKNOWN"}
        slave = linkinfo.get("IFLA_INFO_SLAVE_DATA")
        if linkinfo.get("IFLA_INFO_SLAVE_KIND") == "bridge" and slave is not None:
            for key, value in slave["attrs"]:
                if isinstance(value, int):
                    port[key.removeprefix("IFLA_BRPORT_").lower()] = value
            port["hairpin"] = port.get("mode", 0)
    mode = ""
    if kind == "macvlan":
        mode = str(data.get("IFLA_MACVLAN_MODE", ""))
    elif kind == "ipvlan":
        mode = _IPVLAN_MODE_NAMES.get(int(data.get("IFLA_IPVLAN_MODE", -1)), "")
    vlan_id = data.get("IFLA_VLAN_ID")
    table = data.get("IFLA_VRF_TABLE")
    flags = int(msg["flags"])
    return LinkInfo(
        name=str(_value(attrs, "IFLA_IFNAME")),
        index=int(msg["index"]),
        kind=kind,
        mac=str(_value(attrs, "IFLA_ADDRESS") or "").lower(),
        mtu=int(_value(attrs, "IFLA_MTU") or 0),
        txqlen=int(_value(attrs, "IFLA_TXQLEN") or 0),
        up=bool(flags & IFF_UP),
        promisc=bool(flags & IFF_PROMISC),
        allmulti=bool(flags & IFF_ALLMULTI),
        operstate=str(_value(attrs, "IFLA_OPERSTATE") or "UNKNOWN"),
        master=_value(attrs, "IFLA_MASTER"),
        link_index=_value(attrs, "IFLA_LINK"),
        alias=str(_value(attrs, "IFLA_IFALIAS") or ""),
        parent_bus=str(_value(attrs, "IFLA_PARENT_DEV_BUS_NAME") or ""),
        parent_dev=str(_value(attrs, "IFLA_PARENT_DEV_NAME") or ""),
        port=port,
        mode=mode,
        vlan_id=int(vlan_id) if vlan_id is not None else None,
        table=int(table) if table is not None else None,
        data=data,
    )


def link_info(ifname: str) -> LinkInfo | None:
    """The link ``ifname`` in this thread's namespace, or None if there is none."""
    with rtnl() as ipr:
        msg = link_msg(ipr, ifname)
    return None if msg is None else _link_info(msg)


def link_by_index(index: int) -> LinkInfo | None:
    """The link with ifindex ``index``, or None."""
    from pyroute2.netlink.exceptions import NetlinkError

    with rtnl() as ipr:
        try:
            return _link_info(ipr.link("get", index=index)[0])
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise KernelError(f"failed to read link #{index}: {os.strerror(exc.code)}") from exc


def name_of(ipr: Any, index: int) -> str | None:
    """The name of ifindex ``index`` on the socket ``ipr``, or None if there is none."""
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
    with rtnl() as ipr, kernel_op("failed to list links"):
        return sorted((_link_info(m) for m in ipr.get_links()), key=lambda i: i.index)
    return []  # pragma: no cover


def delete_link(ifname: str, *, missing_ok: bool = True) -> bool:
    """Delete ``ifname``; returns False if it was not there (an error unless ``missing_ok``)."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            if missing_ok:
                return False
            raise KernelError(f"link {ifname!r} not found")
        with kernel_op(f"failed to delete link {ifname!r}", ok=(errno.ENODEV,)):
            ipr.link("del", index=idx)
        return True


def set_promisc(ifname: str, on: bool) -> None:
    """Set or clear IFF_PROMISC on ``ifname``."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to set promiscuous mode on {ifname!r}"):
            ipr.link("set", index=idx, flags=IFF_PROMISC if on else 0, change=IFF_PROMISC)


def set_mac(ifname: str, mac: str) -> None:
    """Set the hardware address of ``ifname``.

    Setting a bridge's MAC (even to its current value) pins it: otherwise the kernel gives
    the bridge the lowest MAC of its ports, and it changes as containers come and go.
    """
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to set MAC {mac} on {ifname!r}"):
            ipr.link("set", index=idx, address=mac)


def set_alias(ifname: str, alias: str) -> None:
    """Set ``ifname``'s ifalias (IFLA_IFALIAS; "" clears it)."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        with kernel_op(f"failed to set the alias of {ifname!r}"):
            ipr.link("set", index=idx, ifalias=alias)


def set_link_attrs(ifname: str, *, mac: str | None = None, mtu: int | None = None,
                   promisc: bool | None = None, allmulti: bool | None = None,
                   txqlen: int | None = None) -> None:
    """Change the given attributes of ``ifname``, one request each; an error names the one
    that failed (the earlier ones stay changed)."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        changes: list[tuple[str, dict[str, Any]]] = []
        if mac is not None:
            changes.append(("MAC address", {"address": mac}))
        if mtu is not None:
            changes.append(("MTU", {"mtu": mtu}))
        if txqlen is not None:
            changes.append(("txQLen", {"txqlen": txqlen}))
        for name, flag, value in (("promiscuous mode", IFF_PROMISC, promisc),
                                  ("all-multicast mode", IFF_ALLMULTI, allmulti)):
            if value is not None:
                changes.append((name, {"flags": flag if value else 0, "change": flag}))
        for name, kwargs in changes:
            try:
                ipr.link("set", index=idx, **kwargs)
            except Exception as exc:
                raise KernelError(f"failed to set {name} of {ifname!r}: {exc}") from exc


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
