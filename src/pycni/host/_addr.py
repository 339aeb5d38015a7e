"""IP addresses on links in the calling thread's namespace."""

from __future__ import annotations

import _socket as socket  # the C module: socket.py (and selectors) cost a start ~3 ms
import errno
import ipaddress
import time

from .._record import FrozenRecord, set_fields
from ..spec import IPInterface, KernelError
from . import _rtnl as rt
from ._rtnl import Rtnl
from .links import _require, kernel_op, route_socket, set_mac

IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08


class AddrInfo(FrozenRecord):
    """One address on a link: the address with its prefix, its scope and IFA flags."""

    __slots__ = ("address", "flags", "scope")
    address: IPInterface
    scope: int
    flags: int

    def __init__(self, address: IPInterface, scope: int, flags: int) -> None:
        set_fields(self, address, scope, flags)

    @property
    def tentative(self) -> bool:
        """IPv6 DAD has not finished (or failed) for this address."""
        return bool(self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))


def _addresses(sock: Rtnl, index: int, family: int = 0) -> list[AddrInfo]:
    af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, 0)
    out = []
    for body in sock.addresses():
        msg_family, prefixlen, msg_flags, scope, msg_index = rt.IFADDR.unpack_from(body)
        if msg_index != index or (af and msg_family != af):
            continue
        attrs = rt.attrs(body, rt.IFADDR.size)
        packed = attrs.get(rt.IFA_ADDRESS)
        if packed is None:
            continue
        flags = attrs.get(rt.IFA_FLAGS)  # all 32 bits; the header has the low 8
        out.append(AddrInfo(address=ipaddress.ip_interface((packed, prefixlen)), scope=scope,
                            flags=rt.as_u32(flags) if flags is not None else msg_flags))
    return out


def list_addresses(ifname: str, family: int = 0, *, index: int = 0) -> list[AddrInfo]:
    """Addresses on ``ifname``; ``family`` 4 or 6 restricts them (0: both); ``index``: its
    ifindex, if known."""
    with route_socket() as sock:
        idx = index or _require(sock, ifname)
        with kernel_op(f"failed to list addresses of {ifname!r}"):
            return _addresses(sock, idx, family)
    return []  # pragma: no cover - kernel_op raised


def _af(address: IPInterface) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def add_address(ifname: str, address: IPInterface, *, exist_ok: bool = False,
                index: int = 0) -> None:
    """Add ``address`` (with its prefix) to ``ifname`` (``index``: its ifindex, if known).

    IPv4 addresses get the subnet's broadcast address, as ``ip addr add ... brd +`` and the
    Go netlink library give them.
    """
    with route_socket() as sock:
        idx = index or _require(sock, ifname)
        prefixlen = address.network.prefixlen
        broadcast = b""
        if address.version == 4 and prefixlen < 31:
            broadcast = address.network.broadcast_address.packed
        ok = (errno.EEXIST,) if exist_ok else ()
        with kernel_op(f"failed to add address {address} to {ifname!r}", ok=ok):
            sock.add_address(idx, _af(address), address.ip.packed, prefixlen, broadcast)


def del_address(ifname: str, address: IPInterface, *, missing_ok: bool = False) -> None:
    """Remove ``address`` from ``ifname``."""
    with route_socket() as sock:
        idx = _require(sock, ifname)
        ok = (errno.EADDRNOTAVAIL, errno.ENODEV) if missing_ok else ()
        with kernel_op(f"failed to remove address {address} from {ifname!r}", ok=ok):
            sock.del_address(idx, _af(address), address.ip.packed, address.network.prefixlen)


def ensure_gateway_address(ifname: str, gateway: IPInterface, *, force: bool,
                           mac: str = "", index: int = 0) -> None:
    """Make sure ``ifname`` carries ``gateway`` (a bridge's gateway address).

    An IPv4 bridge has one gateway address: a different one is an error unless ``force``
    replaces it. IPv6 allows several, as long as their subnets do not overlap. ``mac``
    (the link's current MAC) is written back to pin it; see :func:`links.set_mac`.
    ``index`` (the link's ifindex, if known) spares looking it up.
    """
    for existing in list_addresses(ifname, gateway.version, index=index):
        addr = existing.address
        if addr == gateway:
            return
        if existing.scope != 0:
            continue  # link-local (fe80::/64) addresses are the kernel's own
        if gateway.version == 4 or addr.network.overlaps(gateway.network):
            if not force:
                raise KernelError(
                    f"bridge {ifname!r} has {addr}, config wants {gateway} "
                    "(set forceAddress to replace it)"
                )
            del_address(ifname, addr, missing_ok=True)
    add_address(ifname, gateway, exist_ok=True, index=index)
    if mac:
        set_mac(ifname, mac)


def settle_addresses(ifname: str, timeout: float = 10.0, *, index: int = 0) -> None:
    """Wait until no address on ``ifname`` is tentative (IPv6 DAD done), as upstream does
    (``index``: its ifindex, if known, saves the lookups).

    Routes with a source address that is still tentative are refused by the kernel.
    """
    deadline = time.monotonic() + timeout
    while True:
        pending = [a for a in list_addresses(ifname, index=index) if a.tentative]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KernelError(f"link {ifname!r} still has tentative addresses after {timeout:g}s: "
                              f"{', '.join(str(a.address) for a in pending)}")
        time.sleep(0.05)
