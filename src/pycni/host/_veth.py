"""veth pairs: made from inside one namespace with the peer created directly in another.

The container end is created in the container's namespace and its peer is created in the
host namespace in the same netlink request (``VETH_INFO_PEER`` with ``IFLA_NET_NS_FD``), so
there is never a moment where both ends sit in one namespace under clashing names, and
undoing it is one delete of the container end (the kernel removes the peer with it).

Teardown goes the other way round: :func:`read_for_delete` reads the container end and,
when its peer lives in the caller's namespace, :func:`delete_veth_peer` deletes the pair
from there, batched with the deletes of concurrent calls (see :class:`_PeerBatches`).
Unregistering a device waits for RCU grace periods and for its last references (about
15-25 ms per delete on a test machine, most of a DEL); a group delete unregisters all its
links as one list and waits once: 100 veths in 46 ms instead of 1.8 s one by one.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .._record import FrozenRecord, set_fields
from ..spec import KernelError
from . import _rtnl as rt
from ._netlink import nlattr
from .links import _link_info, _netns_key, kernel_op, route_socket

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


def _global_addresses(sock: rt.Rtnl, idx: int, ifname: str) -> list[str]:
    """The global unicast addresses (``addr/prefix``) of link ``idx``."""
    import ipaddress

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
    return out


class DeleteInfo(FrozenRecord):
    """What :func:`read_for_delete` found: the link's global addresses (None: it was not
    there), its index, and the index of its veth peer in the caller's namespace (0: none,
    the link was deleted where it is)."""

    __slots__ = ("addresses", "index", "peer_index")
    addresses: list[str] | None
    index: int
    peer_index: int

    def __init__(self, addresses: list[str] | None, index: int = 0,
                 peer_index: int = 0) -> None:
        set_fields(self, addresses, index, peer_index)


def read_for_delete(ifname: str, peer_netns_fd: int) -> DeleteInfo:
    """DEL's first half, in the link's namespace: ``ifname``'s addresses, and its removal.

    A veth whose peer is in the namespace ``peer_netns_fd`` is left for
    :func:`delete_veth_peer` (run there), which can batch it with other calls' deletes;
    any other link (a macvlan, a veth whose peer went elsewhere) is deleted here.
    """
    with route_socket() as sock:
        with kernel_op(f"failed to read link {ifname!r}"):
            body = sock.get_link(name=ifname)
        if body is None:
            return DeleteInfo(None)
        idx = rt.IFINFO.unpack_from(body)[2]
        found = rt.attrs(body, rt.IFINFO.size)
        addresses = _global_addresses(sock, idx, ifname)
        peer, peer_nsid = found.get(rt.IFLA_LINK), found.get(rt.IFLA_LINK_NETNSID)
        info = rt.attrs(found.get(rt.IFLA_LINKINFO, b""))
        if (rt.as_str(info.get(rt.IFLA_INFO_KIND, b"")) == "veth" and peer is not None
                and peer_nsid is not None):
            # IFLA_LINK is an index in the peer's namespace, which IFLA_LINK_NETNSID names
            # by this namespace's id for it: the same id as the caller's namespace means the
            # peer is there.
            with kernel_op("failed to look up the host namespace's id"):
                ours = sock.nsid_of(peer_netns_fd)
            if ours >= 0 and ours == rt.as_s32(peer_nsid):
                return DeleteInfo(addresses, idx, rt.as_u32(peer))
        with kernel_op(f"failed to delete link {ifname!r}", ok=(errno.ENODEV,)):
            sock.del_link(idx)
        return DeleteInfo(addresses, idx)


def delete_veth_peer(peer_index: int, index: int, ifname: str) -> None:
    """Delete the veth pair whose end in this namespace is ``peer_index``, the peer of
    ``ifname`` (index ``index`` in its own namespace), as :func:`read_for_delete` found it.

    Gone already (or the index now names another link: the pair went away meanwhile) is
    success. Concurrent calls in one namespace are deleted together (:class:`_PeerBatches`).
    """
    with route_socket() as sock:
        with kernel_op(f"failed to read the host end of {ifname!r}"):
            body = sock.get_link(index=peer_index)
        if body is None:
            return
        found = rt.attrs(body, rt.IFINFO.size)
        kind = rt.as_str(rt.attrs(found.get(rt.IFLA_LINKINFO, b"")).get(rt.IFLA_INFO_KIND, b""))
        link = found.get(rt.IFLA_LINK)
        if kind != "veth" or link is None or rt.as_u32(link) != index:
            return
    _BATCHES.delete(peer_index, ifname)


def _new_group() -> int:
    """A random link group for one batch: above 2**30, away from the small numbers operators
    give groups (ip's "default" is 0); the dump before the delete catches the rest."""
    return 0x40000000 | int.from_bytes(os.urandom(4), "little") & 0x3FFFFFFF


class _Member:
    """One caller's link in a batch, and its outcome."""

    __slots__ = ("done", "error", "ifname", "index")

    def __init__(self, index: int, ifname: str) -> None:
        self.index = index
        self.ifname = ifname
        self.done = False
        self.error: BaseException | None = None


class _Queue:
    """The links waiting in one namespace, and whether a caller is deleting a batch."""

    __slots__ = ("busy", "waiting")

    def __init__(self) -> None:
        self.waiting: list[_Member] = []
        self.busy = False


class _PeerBatches:
    """Group commit of link deletes, per network namespace.

    A caller queues its link; if no delete is running in its namespace it takes the whole
    queue and deletes it (alone, it pays nothing extra); otherwise it waits, and the callers
    that queued during that delete go together next. A lone link is deleted by index. A
    batch is tagged with a random group id (IFLA_GROUP) and deleted by group, one RTM_DELLINK;
    just before, a dump checks that the group holds exactly the batch's links (an operator's
    link in the same group, or one tag that failed, sends the batch down the per-link path
    instead). Each caller gets its own outcome.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[tuple[int, int], _Queue] = {}

    def delete(self, index: int, ifname: str) -> None:
        """Delete link ``index`` of this thread's namespace, with whatever else is queued."""
        key = _netns_key()
        me = _Member(index, ifname)
        with self._cond:
            queue = self._queues.setdefault(key, _Queue())
            queue.waiting.append(me)
            while not me.done and queue.busy:
                self._cond.wait()
            batch: list[_Member] = []
            if not me.done:
                batch, queue.waiting, queue.busy = queue.waiting, [], True
        if batch:
            try:
                self._run(batch)
            finally:
                with self._cond:
                    for member in batch:
                        if not member.done:  # interrupted: no outcome
                            member.done = True
                            member.error = KernelError(
                                f"failed to delete the host end of {member.ifname!r}: "
                                "the batch it was in did not finish")
                    queue.busy = False
                    if not queue.waiting:
                        del self._queues[key]
                    self._cond.notify_all()
        if me.error is not None:
            raise me.error

    def _run(self, batch: list[_Member]) -> None:
        with route_socket() as sock:
            rest = batch
            if len(batch) > 1:
                rest = self._by_group(sock, batch)
            for member in rest:
                try:
                    with kernel_op(f"failed to delete the host end of {member.ifname!r}",
                                   ok=(errno.ENODEV,)):
                        sock.del_link(member.index)
                except KernelError as exc:
                    member.error = exc
                member.done = True

    def _by_group(self, sock: rt.Rtnl, batch: list[_Member]) -> list[_Member]:
        """Delete ``batch`` by group; the members still to delete one by one."""
        group = _new_group()
        tagged: list[_Member] = []
        rest: list[_Member] = []
        for member in batch:
            try:
                sock.set_link(member.index, attributes=rt.u32(rt.IFLA_GROUP, group))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    member.done = True  # gone already
                    continue
                rest.append(member)
                continue
            tagged.append(member)
        if len(tagged) < 2:
            return rest + tagged
        try:
            in_group = {rt.IFINFO.unpack_from(body)[2] for body in sock.links()
                        if rt.as_u32(rt.attrs(body, rt.IFINFO.size).get(rt.IFLA_GROUP, b""))
                        == group}
            if in_group != {member.index for member in tagged}:
                return rest + tagged
            sock.del_group(group)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                return rest + tagged  # the links not deleted get deleted one by one
        for member in tagged:
            member.done = True
        return rest


_BATCHES = _PeerBatches()
