"""How DHCP messages reach the wire: a packet socket on the pod's interface.

The pod's interface has no address while a lease is acquired, so the kernel's UDP stack
cannot receive an OFFER unicast to the address on offer. A ``AF_PACKET``/``SOCK_DGRAM``
socket bound to the interface sends and receives whole IPv4 packets (the kernel adds and
strips the Ethernet header) whatever the interface's addresses are, which serves every step:
broadcast DISCOVER/REQUEST, unicast renewal to the server's MAC, RELEASE.

A socket belongs to the network namespace of the thread that created it, for its whole life.
:class:`NetnsLink` creates its sockets on a :func:`pycni.host.enter` worker inside the pod's
namespace and hands them back; the lease's own thread then uses them from outside.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from typing import Protocol

from ...host import NetNSNotFound, enter, link_info, set_link_down, set_link_up, wait_oper_up
from ...spec import DecodingFailure, KernelError, UnknownContainer
from . import _packet as p

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
BROADCAST_MAC = b"\xff" * 6
#: How long to wait for a link just brought up to get its carrier.
CARRIER_WAIT = 2.0


class LinkGone(UnknownContainer):
    """The lease's namespace or interface no longer exists: nothing left to maintain."""


class Transport(Protocol):
    """Sends DHCP messages and receives replies on one interface."""

    def send(self, msg: p.Message, *, src: p.IPv4, dst: p.IPv4, dst_mac: bytes) -> None:
        """Send ``msg`` from ``src``:68 to ``dst``:67, as a frame to ``dst_mac``."""

    def recv(self, timeout: float) -> tuple[p.Message, bytes] | None:
        """The next DHCP reply and its sender's MAC, or None after ``timeout`` seconds."""

    def close(self) -> None:
        """Release the socket."""


class Link(Protocol):
    """The interface a lease lives on."""

    def open(self) -> tuple[Transport, bytes]:
        """A transport and the interface's MAC; LinkGone if the netns or link vanished."""

    def set_down(self) -> None:
        """Take the interface down (its lease expired); a vanished link is fine."""


class PacketTransport:
    """A :class:`Transport` over an AF_PACKET socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, ifname: str) -> None:
        self._sock = sock
        self._ifname = ifname

    @classmethod
    def open_here(cls, ifname: str) -> tuple[PacketTransport, bytes]:
        """Open the socket in this thread's namespace; also return the interface's MAC.

        Brings the interface up if it is down, as the reference does: the main plugin may
        leave that to the end of its ADD, after IPAM.
        """
        info = link_info(ifname)
        if info is None:
            raise LinkGone(f"interface {ifname!r} not found")
        if not info.up:
            set_link_up(ifname)
        if info.operstate not in ("UP", "UNKNOWN"):
            # A DISCOVER sent before the carrier settles (linkwatch) is lost; waiting here
            # saves a retransmission. A link that stays down is still tried.
            with contextlib.suppress(KernelError):
                wait_oper_up(ifname, timeout=CARRIER_WAIT)
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        except OSError as exc:
            raise KernelError(f"cannot open a packet socket for DHCP on {ifname!r}: "
                              f"{exc.strerror}") from exc
        try:
            sock.bind((ifname, ETH_P_IP))
        except OSError as exc:
            sock.close()
            raise LinkGone(f"cannot bind a packet socket to {ifname!r}: {exc.strerror}") from exc
        return cls(sock, ifname), bytes.fromhex(info.mac.replace(":", ""))

    def send(self, msg: p.Message, *, src: p.IPv4, dst: p.IPv4, dst_mac: bytes) -> None:
        frame = p.udp_frame(msg.encode(), src, dst)
        try:
            self._sock.sendto(frame, (self._ifname, ETH_P_IP, 0, 0, dst_mac))
        except OSError as exc:
            raise KernelError(f"sending {msg.type_name} on {self._ifname!r} failed: "
                              f"{exc.strerror}") from exc

    def recv(self, timeout: float) -> tuple[p.Message, bytes] | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._sock], [], [], max(left, 0.0))
            if not readable:
                return None
            try:
                frame, addr = self._sock.recvfrom(65535)
            except OSError as exc:
                raise KernelError(f"receiving on {self._ifname!r} failed: "
                                  f"{exc.strerror}") from exc
            # The socket also sees our own transmissions and all other IPv4 traffic.
            payload = None if addr[2] == PACKET_OUTGOING else p.parse_udp_frame(frame)
            if payload is None:
                continue
            try:
                msg = p.Message.decode(payload)
            except DecodingFailure:
                continue
            if msg.op == p.BOOTREPLY:
                return msg, bytes(addr[4][:6])

    def close(self) -> None:
        self._sock.close()


class NetnsLink:
    """:class:`Link` for interface ``ifname`` in the namespace at ``netns``."""

    def __init__(self, netns: str, ifname: str) -> None:
        self.netns = netns
        self.ifname = ifname

    def open(self) -> tuple[Transport, bytes]:
        try:
            with enter(self.netns) as ns:
                return ns.call(PacketTransport.open_here, self.ifname)
        except NetNSNotFound as exc:
            raise LinkGone(f"netns {self.netns!r} is gone") from exc

    def set_down(self) -> None:
        try:
            with enter(self.netns) as ns:
                ns.call(set_link_down, self.ifname, missing_ok=True)
        except NetNSNotFound:
            return
