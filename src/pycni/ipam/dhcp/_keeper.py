"""Keeping a lease alive: the RFC 2131 s4.4 BOUND -> RENEWING -> REBINDING cycle.

One :class:`LeaseKeeper` (one thread) per attachment. At T1 it asks the server that granted
the lease (unicast), at T2 any server (broadcast), each time retrying after half the time left
to the next edge. If the lease runs out, or a server answers DHCPNAK, the address is no longer
the pod's: like the reference, the keeper takes the interface down and stops; the lease stays
on record as ``expired`` so CHECK and STATUS can say so. When the pod's namespace or
interface is gone there is nothing to keep and the record is dropped.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...spec import CNIError
from ._client import DhcpClient, Lease, Nak
from ._config import client_id
from ._transport import LinkGone

log = logging.getLogger("pycni.dhcp")

#: Shortest wait for a renewal reply, however close the next edge is.
MIN_RETRY = 0.25
#: While bound, look this often whether the pod's namespace still exists.
NETNS_CHECK_INTERVAL = 30.0


class State(enum.StrEnum):
    """Where a lease is in its life."""

    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Attachment:
    """Whose lease it is: the CNI attachment and what its messages carry."""

    container_id: str
    network: str
    ifname: str
    netns: str
    priority: int = 0
    options: Mapping[int, bytes] = field(default_factory=dict)

    @property
    def client_id(self) -> str:
        """The DHCP client identifier (see :func:`~._config.client_id`)."""
        return client_id(self.container_id, self.network, self.ifname)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form for the lease store."""
        return {"containerID": self.container_id, "network": self.network,
                "ifname": self.ifname, "netns": self.netns, "priority": self.priority,
                "options": {str(k): v.hex() for k, v in self.options.items()}}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Attachment:
        """The inverse of :meth:`to_json`; KeyError/ValueError on a damaged record."""
        return cls(str(obj["containerID"]), str(obj["network"]), str(obj["ifname"]),
                   str(obj["netns"]), int(obj.get("priority", 0)),
                   {int(k): bytes.fromhex(v) for k, v in obj.get("options", {}).items()})


class LeaseKeeper:
    """The thread that keeps one attachment's lease (see the module docstring)."""

    def __init__(self, attachment: Attachment, lease: Lease, client: DhcpClient, *,
                 state: State = State.BOUND, restored: bool = False,
                 on_change: Callable[[LeaseKeeper], None] = lambda _k: None,
                 on_gone: Callable[[LeaseKeeper], None] = lambda _k: None) -> None:
        self.attachment = attachment
        self.lease = lease
        self.client = client
        self.state = state
        self._restored = restored
        #: Successful renewals and rebinds so far.
        self.renewals = 0
        #: Why the lease expired, once it has.
        self.reason = ""
        self._on_change = on_change
        self._on_gone = on_gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"dhcp:{attachment.client_id}")

    def start(self) -> None:
        """Start keeping the lease.

        A lease restored from the store that ran out while no daemon kept it gets one
        INIT-REBOOT try: the server may well give the pod its address back.
        """
        self._thread.start()

    def stop(self, *, release: bool) -> None:
        """Stop keeping the lease; with ``release``, tell the server (DHCPRELEASE)."""
        self._stop.set()
        self.client.cancel.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        if not release or self.state is State.EXPIRED:
            return
        try:
            self.client.release(self.lease)
            log.info("%s: released %s", self.attachment.client_id, self.lease.address)
        except CNIError as exc:  # the pod or its link is gone: the lease will just expire
            log.info("%s: no DHCPRELEASE sent: %s", self.attachment.client_id, exc)

    @property
    def alive(self) -> bool:
        """Whether the lease is still held (not expired)."""
        return self.state is not State.EXPIRED

    def _set(self, state: State) -> None:
        if state is not self.state:
            log.info("%s: %s -> %s", self.attachment.client_id, self.state, state)
            self.state = state
            self._on_change(self)

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the pod's namespace vanished meanwhile."""
        remaining = seconds
        while remaining > 0 and not self._stop.is_set():
            step = min(remaining, NETNS_CHECK_INTERVAL)
            if self._stop.wait(step):
                return False
            remaining -= step
            if not Path(self.attachment.netns).exists():
                return True
        return False

    def _run(self) -> None:
        try:
            self._keep()
        except LinkGone as exc:
            log.info("%s: %s; forgetting the lease", self.attachment.client_id, exc)
            self._on_gone(self)
        except Exception:  # a bug must not pass silently: the lease is then unkept
            log.exception("%s: lease keeper crashed", self.attachment.client_id)

    def _keep(self) -> None:
        clock = self.client.clock
        rebooting = self._restored
        while not self._stop.is_set():
            now, lease = clock(), self.lease
            if now >= lease.expires_at:
                if rebooting:
                    rebooting = False
                    if self._attempt(self.client.reboot, self.client.timing.timeout):
                        continue
                    if self.reason:  # the server said NAK: already expired
                        return
                self._expire("the lease ran out and no server renewed it")
                return
            rebooting = False
            if now < lease.renew_at:
                self._set(State.BOUND)
                if self._wait(lease.renew_at - now):
                    raise LinkGone(f"netns {self.attachment.netns!r} is gone")
                continue
            renewing = now < lease.rebind_at
            self._set(State.RENEWING if renewing else State.REBINDING)
            edge = lease.rebind_at if renewing else lease.expires_at
            # RFC 2131 s4.4.5: wait half the time left to the next edge (at least MIN_RETRY,
            # never past the edge) before asking again.
            left = edge - now
            timeout = min(max(left / 2, MIN_RETRY), left, self.client.timing.timeout)
            self._attempt(self.client.renew if renewing else self.client.rebind, timeout)

    def _attempt(self, exchange: Callable[[Lease, float], Lease | None], timeout: float
                 ) -> bool:
        """One renew/rebind/reboot; True if it gave a new lease. NAK expires the lease."""
        try:
            granted = exchange(self.lease, timeout)
        except Nak as exc:
            self._expire(str(exc))
            self._stop.set()
            return False
        except LinkGone:
            raise
        except CNIError as exc:  # a send failed (link down, no route): try again later
            log.warning("%s: %s", self.attachment.client_id, exc)
            self._stop.wait(MIN_RETRY)
            return False
        if granted is None:
            return False
        self.lease = granted
        self.renewals += 1
        log.info("%s: lease on %s extended to %.0f", self.attachment.client_id,
                 granted.address, granted.expires_at)
        self.state = State.BOUND
        self._on_change(self)
        return True

    def _expire(self, reason: str) -> None:
        log.warning("%s: lease on %s lost (%s); taking %s down", self.attachment.client_id,
                    self.lease.address, reason, self.attachment.ifname)
        self.reason = reason
        try:
            self.client.link.set_down()
        except CNIError as exc:
            log.warning("%s: %s", self.attachment.client_id, exc)
        self._set(State.EXPIRED)
