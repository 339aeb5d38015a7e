"""Link, address and route operations in the calling thread's network namespace.

Every function opens its own pyroute2 socket: pyroute2 0.9 binds a socket to the thread
and namespace that made it, and these run inside ``NetNS.call`` workers. Errors come back as
KernelError naming the object and the operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..spec import KernelError


@contextmanager
def rtnl() -> Iterator[Any]:
    """A pyroute2 IPRoute socket in this thread's namespace."""
    from pyroute2 import IPRoute

    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def index_of(ipr: Any, ifname: str) -> int | None:
    """The ifindex of ``ifname``, or None."""
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _require(ipr: Any, ifname: str) -> int:
    idx = index_of(ipr, ifname)
    if idx is None:
        raise KernelError(f"link {ifname!r} not found")
    return idx


def set_up(ifname: str) -> None:
    """Set ``ifname`` administratively up."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        try:
            ipr.link("set", index=idx, state="up")
        except Exception as exc:
            raise KernelError(f"failed to set link {ifname!r} up: {exc}") from exc


def set_down(ifname: str, *, missing_ok: bool = False) -> None:
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


def is_up(ifname: str) -> bool:
    """True if ``ifname`` exists and has IFF_UP."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            return False
        msg = ipr.link("get", index=idx)[0]
        return bool(msg["flags"] & 1)


def addresses(ifname: str) -> list[str]:
    """Addresses on ``ifname`` as ``"addr/prefix"`` strings (IPv4 first)."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        out = []
        for msg in ipr.get_addr(index=idx):
            out.append(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
        return sorted(out, key=lambda a: ":" in a)
