"""veth pairs: made from inside one namespace with the peer created directly in another.

The container end is created in the container's namespace and its peer is created in the
host namespace in the same netlink request (``VETH_INFO_PEER`` with ``IFLA_NET_NS_FD``), so
there is never a moment where both ends sit in one namespace under clashing names, and
undoing it is one delete of the container end (the kernel removes the peer with it).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .._record import FrozenRecord, set_fields
from ..spec import KernelError
from . import _rtnl as rt
from ._netlink import nlattr
from .links import _link_info, kernel_op, route_socket

#: How often a random host-side name may collide before we give up (as the Go plugins do).
NAME_ATTEMPTS = 10


def random_veth_name() -> str:
    """``veth`` plus 8 hex digits, like the reference plugins (NetworkManager ignores these)."""
    # secrets.token_hex is os.urandom too, but importing secrets costs a plugin start ~4 ms.
    return f"veth{os.urandom(4).hex()}"


@contextmanager
def current_netns_fd() -> Iterator[int]:
    """An fd for the calling thread's network namespace (to hand to another thread)."""
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


class Veth(FrozenRecord):
    """The end of a new pair in this namespace, and the name of its peer."""

    __slots__ = ("index", "mac", "name", "peer_name")
    name: str
    index: int
    mac: str
    peer_name: str

    def __init__(self, name: str, index: int, mac: str, peer_name: str) -> None:
        set_fields(self, name, index, mac, peer_name)


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
    with route_socket() as sock:
        if sock.index_of(ifname) is not None:
            raise KernelError(f"interface {ifname!r} already exists in the container namespace")
        for _ in range(NAME_ATTEMPTS):
            peer = peer_name or random_veth_name()
            # The peer's ifinfomsg and attributes, created straight in the peer namespace.
            peer_attrs = (rt.ifinfo() + rt.string(rt.IFLA_IFNAME, peer)
                          + rt.u32(rt.IFLA_NET_NS_FD, peer_netns_fd) + rt.u32(rt.IFLA_TXQLEN, 0))
            own = rt.ifinfo() + rt.string(rt.IFLA_IFNAME, ifname) + rt.u32(rt.IFLA_TXQLEN, 0)
            if mtu:
                own += rt.u32(rt.IFLA_MTU, mtu)
                peer_attrs += rt.u32(rt.IFLA_MTU, mtu)
            if mac:
                own += nlattr(rt.IFLA_ADDRESS, rt.mac_bytes(mac))
            own += rt.linkinfo("veth", nlattr(rt.VETH_INFO_PEER, peer_attrs))
            try:
                sock.new_link(own)
            except OSError as exc:
                if exc.errno == errno.EEXIST and sock.index_of(ifname) is None:
                    if peer_name:
                        raise KernelError(
                            f"cannot create veth {ifname!r}: peer name {peer!r} already exists"
                        ) from exc
                    continue  # the random host-side name is taken: draw another
                raise KernelError(
                    f"failed to create veth pair {ifname!r}/{peer!r}: {exc.strerror}"
                ) from exc
            with kernel_op(f"failed to read new veth {ifname!r}"):
                body = sock.get_link(name=ifname)
                if body is None:
                    raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
                info = _link_info(body)
                return Veth(name=ifname, index=info.index, mac=info.mac, peer_name=peer)
        raise KernelError(f"failed to find a free host-side veth name for {ifname!r} "
                          f"after {NAME_ATTEMPTS} attempts")


def delete_link_with_addresses(ifname: str) -> list[str] | None:
    """Delete ``ifname``; return its global unicast addresses (``addr/prefix``).

    None means the link was not there (DEL is idempotent; callers then know nothing about
    the addresses it had).
    """
    import ipaddress

    with route_socket() as sock:
        idx = sock.index_of(ifname)
        if idx is None:
            return None
        with kernel_op(f"failed to list addresses of {ifname!r}"):
            msgs = sock.addresses()
        out = []
        for body in msgs:
            _, prefixlen, _, _, index = rt.IFADDR.unpack_from(body)
            packed = rt.attrs(body, rt.IFADDR.size).get(rt.IFA_ADDRESS)
            if index != idx or packed is None:
                continue
            addr = ipaddress.ip_interface((packed, prefixlen))
            ip = addr.ip
            # Go's IP.IsGlobalUnicast: what a masquerade rule could have been made for.
            if not (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local
                    or str(ip) == "255.255.255.255"):
                out.append(str(addr))
        with kernel_op(f"failed to delete link {ifname!r}", ok=(errno.ENODEV,)):
            sock.del_link(idx)
        return out
