"""veth pairs: made from inside one namespace with the peer created directly in another.

The container end is created in the container's namespace and its peer is created in the
host namespace in the same netlink request (``VETH_INFO_PEER`` with ``IFLA_NET_NS_FD``), so
there is never a moment where both ends sit in one namespace under clashing names, and
undoing it is one delete of the container end (the kernel removes the peer with it).

Teardown goes the other way round: :func:`read_for_delete` reads the container end and,
when its peer lives in the caller's namespace, :func:`delete_veth_peer` deletes the pair
from there, batched with the deletes of concurrent calls (see ``_BATCHES``).
Unregistering a device waits for RCU grace periods and for its last references (about
15-25 ms per delete on a test machine, most of a DEL); a group delete unregisters all its
links as one list and waits once: 100 veths in 46 ms instead of 1.8 s one by one.
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py costs a plugin start ~3 ms
import errno
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .._record import FrozenRecord, set_fields
from ..spec import KernelError
from . import _rtnl as rt
from ._addr import _addresses
from ._burst import Combiner, netns_key
from ._netlink import nlattr
from .links import _link_info, kernel_op, route_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

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
    """The end of a new pair in this namespace, the name of its peer and the peer's ifindex
    in its own namespace (0: unknown)."""

    __slots__ = ("index", "mac", "name", "peer_index", "peer_name")
    name: str
    index: int
    mac: str
    peer_name: str
    peer_index: int

    def __init__(self, name: str, index: int, mac: str, peer_name: str,
                 peer_index: int = 0) -> None:
        set_fields(self, name, index, mac, peer_name, peer_index)


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
                # With NLM_F_EXCL the kernel refuses a taken ``ifname`` before it creates
                # anything, so no lookup beforehand: EEXIST names one end or the other.
                if exc.errno == errno.EEXIST and sock.index_of(ifname) is not None:
                    raise KernelError(
                        f"interface {ifname!r} already exists in the container namespace"
                    ) from exc
                if exc.errno == errno.EEXIST:
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
                # IFLA_LINK of a veth is its peer's ifindex in the peer's namespace.
                return Veth(name=ifname, index=info.index, mac=info.mac, peer_name=peer,
                            peer_index=info.link_index or 0)
        raise KernelError(f"failed to find a free host-side veth name for {ifname!r} "
                          f"after {NAME_ATTEMPTS} attempts")


def _global_addresses(sock: rt.Rtnl, idx: int, ifname: str) -> list[str]:
    """The global unicast addresses (``addr/prefix``) of link ``idx``."""
    with kernel_op(f"failed to list addresses of {ifname!r}"):
        found = _addresses(sock, idx)
    out = []
    for info in found:
        ip = info.address.ip
        # Go's IP.IsGlobalUnicast: what a masquerade rule could have been made for.
        if not (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local
                or str(ip) == "255.255.255.255"):
            out.append(str(info.address))
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


def read_for_delete(ifname: str, peer_netns_fd: int, *, addresses: bool = True) -> DeleteInfo:
    """DEL's first half, in the link's namespace: ``ifname``'s addresses, and its removal.

    A veth whose peer is in the namespace ``peer_netns_fd`` is left for
    :func:`delete_veth_peer` (run there), which can batch it with other calls' deletes;
    any other link (a macvlan, a veth whose peer went elsewhere) is deleted here. Without
    ``addresses`` (nothing to tear down by address) the link's addresses are not dumped and
    come back as an empty list.
    """
    with route_socket() as sock:
        with kernel_op(f"failed to read link {ifname!r}"):
            body = sock.get_link(name=ifname)
        if body is None:
            return DeleteInfo(None)
        idx = rt.IFINFO.unpack_from(body)[2]
        found = rt.attrs(body, rt.IFINFO.size)
        found_addresses = _global_addresses(sock, idx, ifname) if addresses else []
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
                return DeleteInfo(found_addresses, idx, rt.as_u32(peer))
        with kernel_op(f"failed to delete link {ifname!r}", ok=(errno.ENODEV,)):
            sock.del_link(idx)
        return DeleteInfo(found_addresses, idx)


def delete_veth_peer(peer_index: int, index: int, ifname: str) -> None:
    """Delete the veth pair whose end in this namespace is ``peer_index``, the peer of
    ``ifname`` (index ``index`` in its own namespace), as :func:`read_for_delete` found it.

    Gone already (or the index now names another link: the pair went away meanwhile) is
    success. Concurrent calls in one namespace are deleted together (``_BATCHES``).
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
        # This namespace's id for the container's (assigned by now: the kernel gives one
        # when it reports IFLA_LINK_NETNSID), for recognising the far end's notification.
        nsid = found.get(rt.IFLA_LINK_NETNSID)
    _BATCHES.run(netns_key(), _Member(peer_index, ifname,
                                      (rt.as_s32(nsid), index) if nsid is not None else None))


def _new_group() -> int:
    """A random link group for one batch: above 2**30, away from the small numbers operators
    give groups (ip's "default" is 0); the dump before the delete catches the rest."""
    return 0x40000000 | int.from_bytes(os.urandom(4), "little") & 0x3FFFFFFF


class _Member:
    """One caller's link; ``far`` is its veth peer as (this namespace's id for the peer's
    namespace, index there), if known."""

    __slots__ = ("far", "ifname", "index")

    def __init__(self, index: int, ifname: str, far: tuple[int, int] | None = None) -> None:
        self.index = index
        self.ifname = ifname
        self.far = far


def _delete_one(member: _Member) -> None:
    """Delete one link by index (gone already is fine)."""
    with route_socket() as sock, kernel_op(
            f"failed to delete the host end of {member.ifname!r}", ok=(errno.ENODEV,)):
        _EARLY.delete(sock, rt.Rtnl.del_link, member.index, _announced([member]))


def _delete_group(batch: Sequence[_Member]) -> list[BaseException | None]:
    """Delete ``batch`` with one RTM_DELLINK: tagged with a random group (IFLA_GROUP), then
    deleted by group once a dump shows the group holds exactly the batch's links. Anything
    else (a tag refused, an operator's link in the group, the delete refused) is a
    KernelError, and the combiner deletes the links one by one instead."""
    group = _new_group()
    with route_socket() as sock:
        try:
            for member in batch:
                sock.set_link(member.index, attributes=rt.u32(rt.IFLA_GROUP, group))
            in_group = {rt.IFINFO.unpack_from(body)[2] for body in sock.links()
                        if rt.as_u32(rt.attrs(body, rt.IFINFO.size).get(rt.IFLA_GROUP, b""))
                        == group}
            if in_group != {member.index for member in batch}:
                raise KernelError(f"link group {group} does not hold just the batch's links")
            _EARLY.delete(sock, rt.Rtnl.del_group, group, _announced(list(batch)))
        except OSError as exc:
            raise KernelError(f"deleting {len(batch)} links as group {group} failed",
                              str(exc)) from exc
    return [None] * len(batch)


#: Link deletes of concurrent calls, per namespace (:mod:`._burst`): a lone link is deleted
#: by index; the links that queued during a delete go as one group delete, which pays the
#: kernel's unregister waits once.
_BATCHES: Combiner[_Member, None] = Combiner(_delete_one, _delete_group)


# -- returning before the kernel's clean-up ------------------------------------------------

_SOL_NETLINK = 270
_NETLINK_LISTEN_ALL_NSID = 8
_RTNLGRP_LINK = 1
_AF_UNSPEC = 0
_NLMSG_HDRLEN = 16
_ENOBUFS = errno.ENOBUFS


def _announced(members: list[_Member]) -> set[tuple[int, int]] | None:
    """The RTM_DELLINK notifications that say ``members`` are gone, as (namespace id, index)
    with -1 for this namespace: both ends of each pair (None: some far end is unknown)."""
    out: set[tuple[int, int]] = set()
    for member in members:
        if member.far is None:
            return None
        out.add((-1, member.index))
        out.add(member.far)
    return out


class _Flight:
    """One RTM_DELLINK sent by a helper thread: its outcome, and a pipe that says it is over.

    The pipe is closed by whichever of the caller and the helper lets go of it last.
    """

    __slots__ = ("error", "lock", "read_fd", "refs", "write_fd")

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.lock = threading.Lock()
        self.refs = 2
        self.read_fd, self.write_fd = os.pipe()

    def release(self) -> None:
        with self.lock:
            self.refs -= 1
            if self.refs:
                return
        os.close(self.read_fd)
        os.close(self.write_fd)


class _EarlyDeletes:
    """RTM_DELLINK that returns once the kernel has announced the deletion (agent only).

    Deleting a link holds the calling thread in the kernel for 15-30 ms on a test machine,
    most of it after every trace of the link is gone: unregister_netdevice_many unlists the
    devices, runs the NETDEV_UNREGISTER notifiers (addresses, routes, neighbours, the bridge
    port) and sends one RTM_DELLINK per device, all under the RTNL (about 1 ms from the
    request); then, with the RTNL released, netdev_run_todo waits for an RCU barrier and the
    devices' last references before the syscall returns. When enabled, the request goes to
    a helper thread on a socket of the caller's namespace (a netlink socket acts in the
    namespace it was made in; the thread, made by the caller, inherits that one too), and
    the caller listens for the RTM_DELLINK of every device it expects (both ends of each
    veth pair: the kernel unregisters a pair as one list, this end first, the far end's
    addresses and routes go just after this end's notification) and returns when it has
    seen them all, or when the syscall returned, whichever comes first. An error can only
    come before any notification, so it reaches the caller as it would have.

    At most ``limit`` requests are in flight; past that the caller sends its own, as
    standalone plugins always do (their process has to wait for the kernel anyway).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._limit = 0
        self._in_flight = 0
        #: Deletes that returned before their syscall (read by tests and the curious).
        self.early = 0
        #: Test hook: run by the helper thread after the syscall returned, before it reports.
        self.after_syscall: Callable[[], None] | None = None

    def start(self, limit: int) -> None:
        with self._cond:
            self._limit = limit

    def stop(self, timeout: float) -> bool:
        """No more early returns; wait up to ``timeout`` s for the deletes in flight."""
        with self._cond:
            self._limit = 0
            return self._cond.wait_for(lambda: not self._in_flight, timeout)

    def delete(self, sock: rt.Rtnl, request: Callable[[rt.Rtnl, int], object], arg: int,
               expect: set[tuple[int, int]] | None) -> None:
        """``request(sock, arg)`` (an RTM_DELLINK: :meth:`~._rtnl.Rtnl.del_link` or
        ``del_group``) in this thread's namespace; return when it is done or, if enabled,
        when every (namespace id, index) in ``expect`` is announced."""
        with self._cond:
            early = bool(expect) and self._in_flight < self._limit
            if early:
                self._in_flight += 1
        if not early or expect is None:
            request(sock, arg)
            return
        listener = req = flight = None
        try:
            listener = _link_listener()
            req = rt.Rtnl()
            flight = _Flight()
            threading.Thread(target=self._send, args=(req, request, arg, flight),
                             name="pycni-dellink", daemon=True).start()
        except BaseException:  # nothing was sent: undo, and the caller sees the error
            for closing in (listener, req):
                if closing is not None:
                    closing.close()
            if flight is not None:
                os.close(flight.read_fd)
                os.close(flight.write_fd)
            self._landed()
            raise
        # From here the helper owns ``req`` and one reference to ``flight``.
        try:
            if _wait_announced(listener, flight, expect):
                with self._cond:
                    self.early += 1
                return
        finally:
            listener.close()
            flight.release()
        if flight.error is not None:
            raise flight.error

    def _send(self, req: rt.Rtnl, request: Callable[[rt.Rtnl, int], object], arg: int,
              flight: _Flight) -> None:
        try:
            try:
                request(req, arg)
            except Exception as exc:  # the caller's, if it is still waiting
                flight.error = exc
            finally:
                req.close()
            if self.after_syscall is not None:
                self.after_syscall()
        finally:
            # Whatever happened, the caller must hear that the request is over.
            os.write(flight.write_fd, b"\0")
            flight.release()
            self._landed()

    def _landed(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()


def _link_listener() -> socket.socket:
    """A socket of this thread's namespace that hears link notifications from it and from
    every namespace it has an id for (NETLINK_LISTEN_ALL_NSID; each such message comes
    with that id), subscribed before the request is sent so none can be missed."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                         | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(_SOL_NETLINK, _NETLINK_LISTEN_ALL_NSID, 1)
        sock.bind((0, 1 << (_RTNLGRP_LINK - 1)))
    except BaseException:
        sock.close()
        raise
    return sock


def _wait_announced(listener: socket.socket, flight: _Flight,
                    expect: set[tuple[int, int]]) -> bool:
    """True once every expected RTM_DELLINK was heard; False when the syscall ended first
    (or the listener overflowed: then only the syscall can tell)."""
    import select

    waiting = set(expect)
    poller = select.poll()
    poller.register(flight.read_fd, select.POLLIN)
    poller.register(listener.fileno(), select.POLLIN)
    buf = bytearray(8192)  # a DELLINK of a veth is ~1.5 KB; a longer one is cut (MSG_TRUNC)
    anc = socket.CMSG_SPACE(4)
    while True:
        ready = poller.poll()
        if any(fd == flight.read_fd for fd, _ in ready):
            return False
        while True:
            try:
                size, ancdata, _, _ = listener.recvmsg_into([buf], anc)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != _ENOBUFS:
                    raise
                # Notifications were dropped: ours may be among them.
                poller.unregister(listener.fileno())
                break
            if size < _NLMSG_HDRLEN + rt.IFINFO.size:
                continue
            kind = int.from_bytes(buf[4:6], sys.byteorder)
            family, _, index, _, _ = rt.IFINFO.unpack_from(buf, _NLMSG_HDRLEN)
            # AF_UNSPEC: the device itself; the bridge's AF_BRIDGE DELLINK for the port
            # comes earlier. A message from this namespace has no id (-1).
            if kind != rt.RTM_DELLINK or family != _AF_UNSPEC:
                continue
            nsid = -1
            for level, kind_, data in ancdata:
                if level == _SOL_NETLINK and kind_ == _NETLINK_LISTEN_ALL_NSID:
                    nsid = int.from_bytes(data[:4], sys.byteorder, signed=True)
            waiting.discard((nsid, index))
            if not waiting:
                return True


_EARLY = _EarlyDeletes()


def start_early_deletes(limit: int = 4) -> None:
    """Let veth deletes of this process return once the kernel announced them, with at
    most ``limit`` requests left running in helper threads (the agent; see
    :class:`_EarlyDeletes`)."""
    _EARLY.start(limit)


def stop_early_deletes(timeout: float) -> bool:
    """End :func:`start_early_deletes`; wait up to ``timeout`` seconds for the deletes
    still in the kernel. True if none is left."""
    return _EARLY.stop(timeout)
