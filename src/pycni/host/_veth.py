"""veth pairs: made from inside one namespace with the peer created directly in another.

The container end is created in the container's namespace and its peer is created in the
host namespace in the same netlink request (``VETH_INFO_PEER`` with ``IFLA_NET_NS_FD``), so
there is never a moment where both ends sit in one namespace under clashing names, and
undoing it is one delete of the container end (the kernel removes the peer with it).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..spec import KernelError
from .links import index_of, kernel_op, rtnl

#: How often a random host-side name may collide before we give up (as the Go plugins do).
NAME_ATTEMPTS = 10


def random_veth_name() -> str:
    """``veth`` plus 8 hex digits, like the reference plugins (NetworkManager ignores these)."""
    return f"veth{secrets.token_hex(4)}"


@contextmanager
def current_netns_fd() -> Iterator[int]:
    """An fd for the calling thread's network namespace (to hand to another thread)."""
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Veth:
    """The end of a new pair in this namespace, and the name of its peer."""

    name: str
    index: int
    mac: str
    peer_name: str


def create_veth(
    ifname: str,
    peer_netns_fd: int,
    *,
    mtu: int = 0,
    mac: str = "",
    peer_name: str = "",
) -> Veth:
    """Create ``ifname`` here with its peer in the namespace ``peer_netns_fd``.

    Both ends get txqueuelen 0 like the Go plugins' veths (a veth has no queue of its own;
    the kernel default would be 1000). Without ``peer_name`` the peer is
    :func:`random_veth_name`, retried on a clash in the peer namespace. If ``ifname``
    already exists here the error says so.
    """
    with rtnl() as ipr:
        if index_of(ipr, ifname) is not None:
            raise KernelError(f"interface {ifname!r} already exists in the container namespace")
        from pyroute2.netlink.exceptions import NetlinkError

        for _ in range(NAME_ATTEMPTS):
            peer = peer_name or random_veth_name()
            peer_spec: dict[str, object] = {"ifname": peer, "net_ns_fd": peer_netns_fd,
                                            "txqlen": 0}
            kwargs: dict[str, object] = {"ifname": ifname, "kind": "veth", "txqlen": 0,
                                         "peer": peer_spec}
            if mtu:
                kwargs["mtu"] = mtu
                peer_spec["mtu"] = mtu
            if mac:
                kwargs["address"] = mac
            try:
                ipr.link("add", **kwargs)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST and index_of(ipr, ifname) is None:
                    if peer_name:
                        raise KernelError(
                            f"cannot create veth {ifname!r}: peer name {peer!r} already exists"
                        ) from exc
                    continue  # the random host-side name is taken: draw another
                raise KernelError(
                    f"failed to create veth pair {ifname!r}/{peer!r}: {os.strerror(exc.code)}"
                ) from exc
            with kernel_op(f"failed to read new veth {ifname!r}"):
                msg = ipr.link("get", ifname=ifname)[0]
                return Veth(name=ifname, index=int(msg["index"]),
                            mac=str(msg.get("IFLA_ADDRESS")), peer_name=peer)
        raise KernelError(f"failed to find a free host-side veth name for {ifname!r} "
                          f"after {NAME_ATTEMPTS} attempts")


def delete_link_with_addresses(ifname: str) -> list[str] | None:
    """Delete ``ifname``; return its global unicast addresses (``addr/prefix``).

    None means the link was not there (DEL is idempotent; callers then know nothing about
    the addresses it had).
    """
    import ipaddress

    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            return None
        with kernel_op(f"failed to list addresses of {ifname!r}"):
            msgs = ipr.get_addr(index=idx)
        out = []
        for msg in msgs:
            addr = ipaddress.ip_interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
            ip = addr.ip
            # Go's IP.IsGlobalUnicast: what a masquerade rule could have been made for.
            if not (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local
                    or str(ip) == "255.255.255.255"):
                out.append(str(addr))
        with kernel_op(f"failed to delete link {ifname!r}", ok=(errno.ENODEV,)):
            ipr.link("del", index=idx)
        return out
