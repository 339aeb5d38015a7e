"""The DHCP client's exchanges (RFC 2131 s3/s4.4) and the lease they produce.

:class:`DhcpClient` runs one exchange at a time on a :class:`~._transport.Link`:
:meth:`~DhcpClient.acquire` (DISCOVER, OFFER, REQUEST, ACK, retried with the reference's
backoff until ``resend_timeout``), :meth:`~DhcpClient.renew` (REQUEST unicast to the server,
T1..T2), :meth:`~DhcpClient.rebind` (REQUEST broadcast, T2..expiry),
:meth:`~DhcpClient.reboot` (INIT-REBOOT: ask again for an address we had, after a daemon
restart outlived the lease) and :meth:`~DhcpClient.release`. A :class:`Lease` is what an ACK
granted, with absolute (wall-clock) renewal, rebinding and expiry times so it can be stored
and picked up again by a restarted daemon.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ...spec import (
    DNS,
    InvalidNetworkConfig,
    IPConfig,
    Result,
    Route,
    TryAgainLater,
)
from . import _packet as p
from ._transport import BROADCAST_MAC, Link, Transport

log = logging.getLogger("pycni.dhcp")

#: The reference's retry schedule: four quick retries 2 s (+-1 s) apart, then 4 s doubling
#: (+-1 s) up to ``resend_max``.
RESEND_FAST_DELAY = 2.0
RESEND_FAST_COUNT = 4
RESEND_DELAY0 = 4.0
#: Lease time assumed when an ACK has no option 51 (the reference's default).
DEFAULT_LEASE_TIME = 3600.0
#: A lease of 0xffffffff seconds is infinite (RFC 2132 s9.2); a century stands in for it.
INFINITE_LEASE = 100 * 365 * 86400.0
#: How often a wait for a reply looks at :attr:`DhcpClient.cancel`.
CANCEL_POLL = 0.2
#: The route scope (RT_SCOPE_LINK) for an option 121 route without a router.
SCOPE_LINK = 253


class Nak(TryAgainLater):
    """The server answered DHCPNAK: the address is no longer ours (a new DISCOVER may work)."""


@dataclass(frozen=True)
class Timing:
    """The daemon's client settings (its command-line flags)."""

    #: How long to wait for each reply.
    timeout: float = 10.0
    #: The longest pause between acquisition attempts.
    resend_max: float = 62.0
    #: Give up acquiring after this long.
    resend_timeout: float = 208.0
    #: Ask servers to broadcast their replies (the BOOTP broadcast flag).
    broadcast: bool = False
    #: Trust a lease for at most this long (renew and rebind scale with it); for tests
    #: against servers whose shortest lease is minutes.
    max_lease_time: float | None = None


@dataclass
class Lease:
    """An address a server granted, with the ACK that granted it."""

    address: ipaddress.IPv4Interface
    server_id: p.IPv4
    server_mac: bytes
    ack: p.Message
    obtained: float
    renew_at: float
    rebind_at: float
    expires_at: float

    @classmethod
    def from_ack(cls, ack: p.Message, server_mac: bytes, now: float,
                 max_lease_time: float | None = None) -> Lease:
        """The lease an ACK grants; InvalidNetworkConfig if it lacks what CNI needs."""
        prefix = p.subnet_mask(ack.options.get(p.OPT_SUBNET_MASK))
        if prefix is None:
            raise InvalidNetworkConfig("DHCP option subnet-mask not found in DHCPACK",
                                       "the server must send option 1 (subnet-mask)")
        server = ack.server_id or ack.siaddr
        raw_lease = p.seconds(ack.options.get(p.OPT_LEASE_TIME))
        lease_time = (DEFAULT_LEASE_TIME if raw_lease is None
                      else INFINITE_LEASE if raw_lease == 0xFFFFFFFF else float(raw_lease))
        if max_lease_time is not None:
            lease_time = min(lease_time, max_lease_time)
        # RFC 2131 s4.4.5: T2 defaults to 87.5% and T1 to 50% of the lease, and a server's
        # values only count if T1 < T2 < lease.
        t2 = p.seconds(ack.options.get(p.OPT_REBINDING_TIME))
        rebind = float(t2) if t2 is not None and t2 < lease_time else lease_time * 0.875
        t1 = p.seconds(ack.options.get(p.OPT_RENEWAL_TIME))
        renew = float(t1) if t1 is not None and t1 < rebind else lease_time * 0.5
        return cls(address=ipaddress.IPv4Interface((ack.yiaddr, prefix)), server_id=server,
                   server_mac=server_mac, ack=ack, obtained=now, renew_at=now + renew,
                   rebind_at=now + rebind, expires_at=now + lease_time)

    @property
    def gateway(self) -> p.IPv4 | None:
        """The first router of option 3."""
        routers = p.ip_list(self.ack.options.get(p.OPT_ROUTER))
        return routers[0] if routers else None

    def routes(self, priority: int = 0) -> list[Route]:
        """Option 121 routes if the server sent any (RFC 3442 s3: then options 3 and 33 are
        ignored), else option 33 routes and a default route through the first router."""
        classless = p.classless_routes(self.ack.options.get(p.OPT_CLASSLESS_ROUTES))
        if classless:
            return [Route(dst=ipaddress.IPv4Interface(net.with_prefixlen),
                          gw=None if gw.packed == b"\0\0\0\0" else gw, priority=priority,
                          scope=SCOPE_LINK if gw.packed == b"\0\0\0\0" else None)
                    for net, gw in classless]
        routes = [Route(dst=ipaddress.IPv4Interface(net.with_prefixlen), gw=gw,
                        priority=priority)
                  for net, gw in p.static_routes(self.ack.options.get(p.OPT_STATIC_ROUTES))]
        if self.gateway is not None:
            routes.append(Route(dst=ipaddress.IPv4Interface("0.0.0.0/0"), gw=self.gateway,
                                priority=priority))
        return routes

    def dns(self) -> DNS:
        """Options 6, 15 and 119, when the server sent them."""
        domain = self.ack.options.get(p.OPT_DOMAIN_NAME, b"").rstrip(b"\0")
        return DNS(nameservers=[str(ip) for ip in p.ip_list(self.ack.options.get(p.OPT_DNS))],
                   domain=domain.decode("ascii", "replace"),
                   search=p.domain_search(self.ack.options.get(p.OPT_DOMAIN_SEARCH)))

    def result(self, priority: int = 0) -> Result:
        """The IPAM result for this lease."""
        return Result(ips=[IPConfig(address=self.address, gateway=self.gateway)],
                      routes=self.routes(priority), dns=self.dns())

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form for the lease store."""
        return {"address": str(self.address), "serverID": str(self.server_id),
                "serverMAC": self.server_mac.hex(), "ack": self.ack.encode().hex(),
                "obtained": self.obtained, "renewAt": self.renew_at,
                "rebindAt": self.rebind_at, "expiresAt": self.expires_at}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Lease:
        """The inverse of :meth:`to_json`; KeyError/ValueError on a damaged record."""
        return cls(address=ipaddress.IPv4Interface(obj["address"]),
                   server_id=p.IPv4(obj["serverID"]), server_mac=bytes.fromhex(obj["serverMAC"]),
                   ack=p.Message.decode(bytes.fromhex(obj["ack"])),
                   obtained=float(obj["obtained"]), renew_at=float(obj["renewAt"]),
                   rebind_at=float(obj["rebindAt"]), expires_at=float(obj["expiresAt"]))


def resend_delays(resend_max: float) -> Iterator[float]:
    """The pauses between acquisition attempts, jittered by +-1 s as RFC 2131 s4.1 asks."""
    for _ in range(RESEND_FAST_COUNT):
        yield RESEND_FAST_DELAY + random.uniform(-1.0, 1.0)  # noqa: S311 - jitter, not crypto
    delay = RESEND_DELAY0
    while True:
        yield delay + random.uniform(-1.0, 1.0)  # noqa: S311
        delay = min(delay * 2, max(resend_max, RESEND_DELAY0))


@dataclass
class DhcpClient:
    """Runs DHCP exchanges for one client identifier on one link."""

    link: Link
    client_id: str
    #: Provided options and the parameter request list, sent with every request.
    options: dict[int, bytes] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    clock: Callable[[], float] = time.time
    #: Set to abandon a running acquisition (daemon shutdown, DEL during ADD).
    cancel: threading.Event = field(default_factory=threading.Event)

    def _message(self, mtype: int, mac: bytes, xid: int, *, ciaddr: p.IPv4 = p.ANY,
                 extra: dict[int, bytes] | None = None, with_options: bool = True
                 ) -> p.Message:
        # Option 61 starts with a type byte; 0 says "not a hardware address" (RFC 2132 s9.14).
        opts = {p.OPT_MESSAGE_TYPE: bytes((mtype,)),
                p.OPT_CLIENT_ID: b"\0" + self.client_id.encode()}
        opts.update(extra or {})
        if with_options:
            opts.update(self.options)
        elif p.OPT_CLIENT_ID in self.options:  # a provided client ID replaces ours throughout
            opts[p.OPT_CLIENT_ID] = self.options[p.OPT_CLIENT_ID]
        flags = p.FLAG_BROADCAST if self.timing.broadcast and ciaddr == p.ANY else 0
        return p.Message(xid=xid, flags=flags, ciaddr=ciaddr, chaddr=mac, options=opts)

    def _exchange(self, transport: Transport, msg: p.Message, want: tuple[int, ...], *,
                  src: p.IPv4, dst: p.IPv4, dst_mac: bytes, timeout: float
                  ) -> tuple[p.Message, bytes] | None:
        """Send ``msg``; the first reply to it of a type in ``want``, or None at timeout."""
        transport.send(msg, src=src, dst=dst, dst_mac=dst_mac)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and not self.cancel.is_set():
            got = transport.recv(min(left, CANCEL_POLL))
            if got is None:
                continue
            reply, mac = got
            if (reply.xid == msg.xid and reply.chaddr[:6] == msg.chaddr[:6]
                    and reply.message_type in want):
                return reply, mac
        return None

    def _open(self) -> tuple[Transport, bytes]:
        return self.link.open()

    def acquire(self) -> Lease:
        """DISCOVER/OFFER/REQUEST/ACK until a lease or ``resend_timeout``.

        Raises TryAgainLater when no server granted a lease in time, LinkGone when the
        interface vanished, Nak never (a NAK restarts the exchange).
        """
        deadline = time.monotonic() + self.timing.resend_timeout
        delays = resend_delays(self.timing.resend_max)
        while True:
            lease = self._try_acquire()
            if lease is not None:
                return lease
            left = deadline - time.monotonic()
            if left <= 0 or self.cancel.wait(min(next(delays), left)):
                raise TryAgainLater(
                    f"dhcp: no DHCP server granted a lease on {self._where()}",
                    f"gave up after {self.timing.resend_timeout:g}s")

    def _where(self) -> str:
        return f"{getattr(self.link, 'ifname', 'the interface')} ({self.client_id})"

    def _try_acquire(self) -> Lease | None:
        transport, mac = self._open()
        try:
            xid = random.getrandbits(32)
            discover = self._message(p.DISCOVER, mac, xid)
            got = self._exchange(transport, discover, (p.OFFER,), src=p.ANY,
                                 dst=p.BROADCAST, dst_mac=BROADCAST_MAC,
                                 timeout=self.timing.timeout)
            if got is None:
                log.info("%s: no DHCPOFFER", self.client_id)
                return None
            offer, _ = got
            server = offer.server_id or offer.siaddr
            request = self._message(p.REQUEST, mac, xid, extra={
                p.OPT_REQUESTED_IP: offer.yiaddr.packed, p.OPT_SERVER_ID: server.packed})
            got = self._exchange(transport, request, (p.ACK, p.NAK), src=p.ANY,
                                 dst=p.BROADCAST, dst_mac=BROADCAST_MAC,
                                 timeout=self.timing.timeout)
            if got is None or got[0].message_type == p.NAK:
                log.info("%s: %s to DHCPREQUEST for %s", self.client_id,
                         "DHCPNAK" if got else "no answer", offer.yiaddr)
                return None
            return Lease.from_ack(got[0], got[1], self.clock(), self.timing.max_lease_time)
        finally:
            transport.close()

    def _request(self, lease: Lease, timeout: float, *, unicast: bool, reboot: bool = False
                 ) -> Lease | None:
        """One REQUEST for the lease's address: RENEWING (unicast, ciaddr), REBINDING
        (broadcast, ciaddr) or INIT-REBOOT (broadcast, requested-ip). Raises Nak."""
        transport, mac = self._open()
        try:
            xid = random.getrandbits(32)
            ip = lease.address.ip
            msg = (self._message(p.REQUEST, mac, xid, extra={p.OPT_REQUESTED_IP: ip.packed})
                   if reboot else self._message(p.REQUEST, mac, xid, ciaddr=ip))
            got = self._exchange(
                transport, msg, (p.ACK, p.NAK), src=p.ANY if reboot else ip,
                dst=lease.server_id if unicast else p.BROADCAST,
                dst_mac=lease.server_mac if unicast else BROADCAST_MAC, timeout=timeout)
        finally:
            transport.close()
        if got is None:
            return None
        reply, server_mac = got
        if reply.message_type == p.NAK:
            text = reply.options.get(p.OPT_MESSAGE, b"").decode("utf-8", "replace")
            raise Nak(f"dhcp: server {reply.server_id or lease.server_id} refused "
                      f"{lease.address.ip} for {self.client_id}", text)
        if reply.yiaddr != ip:
            raise Nak(f"dhcp: server offered {reply.yiaddr} instead of {ip} for "
                      f"{self.client_id}")
        granted = Lease.from_ack(reply, server_mac, self.clock(), self.timing.max_lease_time)
        # A renewal keeps the prefix the pod was configured with if the server left out
        # the mask this time.
        return replace(granted, address=ipaddress.IPv4Interface((ip, granted.address.network
                                                                 .prefixlen)))

    def renew(self, lease: Lease, timeout: float) -> Lease | None:
        """RENEWING: ask the server that granted the lease, unicast; None if it is silent."""
        return self._request(lease, timeout, unicast=True)

    def rebind(self, lease: Lease, timeout: float) -> Lease | None:
        """REBINDING: ask any server, broadcast; None if none answers."""
        return self._request(lease, timeout, unicast=False)

    def reboot(self, lease: Lease, timeout: float) -> Lease | None:
        """INIT-REBOOT: ask again for an address whose lease ran out while nobody kept it."""
        return self._request(lease, timeout, unicast=False, reboot=True)

    def release(self, lease: Lease) -> None:
        """Send DHCPRELEASE to the server (no reply comes)."""
        transport, mac = self._open()
        try:
            msg = self._message(p.RELEASE, mac, random.getrandbits(32), ciaddr=lease.address.ip,
                                extra={p.OPT_SERVER_ID: lease.server_id.packed},
                                with_options=False)
            msg.flags = 0
            transport.send(msg, src=lease.address.ip, dst=lease.server_id,
                           dst_mac=lease.server_mac)
        finally:
            transport.close()
