"""The backend Protocol: how a node reaches the other nodes' pod subnets.

A backend makes what the node needs once (:meth:`Backend.setup`: a VXLAN device, say),
returns the *peer data* the other nodes need to reach this one (published by the
datastore), and then, on every datastore update and on a timer, makes the kernel match the
peers (:meth:`Backend.reconcile`): the desired state is computed from the peers, the actual
state is read from the kernel, and only the difference is applied. Reconcile is
idempotent: a second call with the same peers changes nothing, and an agent that restarts
finds everything correct and touches nothing.

A peer whose peer data this backend cannot use (another backend, a malformed MAC or
address, a subnet that overlaps this node's) is skipped and named in the report; a peer
that cannot be programmed (host-gw: not on-link; a kernel error) is named in ``errors``.
Neither stops the other peers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ... import host
from ...host import RouteInfo
from ...spec import InvalidNetworkConfig, IPAddress, KernelError
from .._base import NodeRecord, PeerData, Subnet


@dataclass(frozen=True)
class LocalNode:
    """What the agent knows about this node when it sets the backend up.

    ``subnets`` are the node's pod subnets (IPv4 first), ``underlay_address`` the address
    the other nodes reach it at and ``underlay_device`` the link that address is on.
    """

    name: str
    subnets: tuple[Subnet, ...]
    underlay_address: IPAddress
    underlay_device: str


@dataclass(frozen=True)
class ReconcileReport:
    """What one :meth:`Backend.reconcile` did, each kernel object described as ``ip`` would.

    ``skipped`` maps peers left out because of their peer data to the reason; ``errors``
    maps peers that could not be programmed to what failed. ``changes`` is 0 when the
    kernel already matched the peers.
    """

    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        """How many kernel objects were added, replaced or removed."""
        return len(self.added) + len(self.replaced) + len(self.removed)


class Backend(Protocol):
    """One way of connecting the nodes (see the module docstring)."""

    #: The ``type`` name this backend answers to (and publishes as the peer's "backend").
    name: ClassVar[str]
    #: The option keys only this backend accepts (besides ``type``).
    options: ClassVar[frozenset[str]]

    def setup(self, local: LocalNode) -> PeerData:
        """Create what the node needs (idempotent) and return the peer data to publish."""
        ...

    def reconcile(self, peers: Mapping[str, NodeRecord]) -> ReconcileReport:
        """Make the kernel match ``peers`` (every other node, by name); after :meth:`setup`."""
        ...

    def teardown(self) -> None:
        """Remove everything this backend made on the node (after :meth:`setup`)."""
        ...


class SetUpBackend:
    """The state every backend keeps from :meth:`Backend.setup`: the local node."""

    name: ClassVar[str]
    _local: LocalNode | None = None

    @property
    def local(self) -> LocalNode:
        """The node :meth:`Backend.setup` was called for."""
        if self._local is None:
            raise KernelError(f"the {self.name} backend is not set up (call setup first)")
        return self._local


class BadPeerError(Exception):
    """A peer's data this backend cannot use; the message is the reason."""


def peer_address(record: NodeRecord, family: int) -> IPAddress:
    """The peer's ``"underlay"`` address; BadPeerError unless it is one of ``family``."""
    value = record.peer.get("underlay")
    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        ip = None
    if ip is None:
        raise BadPeerError(f'"underlay" must be an IP address, got {value!r}')
    if ip.version != family:
        raise BadPeerError(f'"underlay" {ip} is IPv{ip.version}, this node\'s underlay is '
                          f"IPv{family}")
    return ip


def check_peer(record: NodeRecord, backend: str, local: LocalNode,
               taken: list[tuple[str, Subnet]]) -> None:
    """BadPeerError unless ``record`` is for ``backend`` and its subnets overlap neither this
    node's nor those of a peer already accepted (``taken``, extended here)."""
    if record.peer.get("backend") != backend:
        raise BadPeerError(f'peer uses backend {record.peer.get("backend")!r}, this node '
                          f'uses "{backend}"')
    if not record.subnets:
        raise BadPeerError("peer has no subnets")
    for subnet in record.subnets:
        for owner, other in [(local.name, s) for s in local.subnets] + taken:
            if subnet.version == other.version and subnet.overlaps(other):
                raise BadPeerError(f"subnet {subnet} overlaps {other} of node {owner!r}")
    taken.extend((record.name, s) for s in record.subnets)


def check_options(backend: str, options: Mapping[str, Any], known: frozenset[str],
                  others: Mapping[str, frozenset[str]]) -> None:
    """InvalidNetworkConfig naming the key for an option of another backend or none."""
    for key in sorted(options):
        if key == "type" or key in known:
            continue
        owners = sorted(name for name, opts in others.items() if key in opts)
        if owners:
            raise InvalidNetworkConfig(
                f'"backend.{key}" is an option of the {owners[0]} backend, not of '
                f'"{backend}": remove it or set "type": "{owners[0]}"')
        valid = ", ".join(sorted({"type"} | known))
        raise InvalidNetworkConfig(
            f'unknown backend option "backend.{key}" for "{backend}" (known: {valid})')


def int_option(options: Mapping[str, Any], key: str, default: int, *, low: int,
               high: int, what: str) -> int:
    """``options[key]`` as an int in [low, high] (``default`` when absent)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidNetworkConfig(
            f'invalid "backend.{key}": expected {what}, an integer between {low} and '
            f"{high}, got {value!r}")
    return value


class ReportBuilder:
    """Collects one reconcile's changes, skipped peers and errors."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.replaced: list[str] = []
        self.removed: list[str] = []
        self.skipped: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def error(self, peer: str, message: str) -> None:
        """Record a failure for ``peer`` (several are joined)."""
        self.errors[peer] = f"{self.errors[peer]}; {message}" if peer in self.errors else message

    def build(self) -> ReconcileReport:
        """The report."""
        return ReconcileReport(tuple(self.added), tuple(self.replaced), tuple(self.removed),
                               dict(self.skipped), dict(self.errors))


@dataclass(frozen=True)
class WantedRoute:
    """A route a backend wants for ``peer``: ``dst via gateway dev ifname [onlink]``."""

    peer: str
    dst: Subnet
    gateway: IPAddress
    ifname: str
    onlink: bool = False

    def describe(self) -> str:
        """As ``ip route`` shows it."""
        return (f"route {self.dst} via {self.gateway} dev {self.ifname}"
                + (" onlink" if self.onlink else ""))


def sync_routes(wanted: list[WantedRoute], owned: Callable[[RouteInfo], bool],
                report: ReportBuilder, *, remove: bool) -> None:
    """Add or replace the ``wanted`` routes that the main table lacks or has wrong; with
    ``remove``, delete the routes ``owned`` selects that are not wanted (any more).

    A route is right when the main table has it exactly (gateway, device, onlink, pycni's
    protocol, default metric); otherwise ``ip route replace`` swaps it in one step.
    """
    actual = [r for family in (4, 6) for r in host.list_routes(family)]
    indexes: dict[str, int | None] = {}
    for want in wanted:
        if want.ifname not in indexes:
            info = host.link_info(want.ifname)
            indexes[want.ifname] = info.index if info is not None else None
        # The kernel stores a metric-0 IPv6 route with metric 1024 (IP6_RT_PRIO_USER).
        metric = 0 if want.dst.version == 4 else 1024
        same_dst = [r for r in actual if r.dst == want.dst and r.priority == metric]
        if any(r.gateway == want.gateway and r.oif == indexes[want.ifname]
               and r.onlink == want.onlink and r.protocol == host.RTPROT_PYCNI
               for r in same_dst):
            continue
        try:
            host.replace_route(want.dst, ifname=want.ifname, gateway=want.gateway,
                               onlink=want.onlink, protocol=host.RTPROT_PYCNI,
                               index=indexes[want.ifname])
        except KernelError as exc:
            report.error(want.peer, str(exc))
            continue
        (report.replaced if same_dst else report.added).append(want.describe())
    if not remove:
        return
    keep = {want.dst for want in wanted}
    for route in actual:
        if route.dst in keep or not owned(route) or route.oif is None:
            continue
        link = host.link_by_index(route.oif)
        if link is None:
            continue
        try:
            host.del_route(route.dst, ifname=link.name, gateway=route.gateway, missing_ok=True)
        except KernelError as exc:
            report.error("(removed node)", str(exc))
            continue
        via = f" via {route.gateway}" if route.gateway is not None else ""
        report.removed.append(f"route {route.dst}{via} dev {link.name}")
