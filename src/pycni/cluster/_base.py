"""The cluster data model and the datastore Protocol.

A node of a pycni cluster owns one pod subnet per address family and publishes *peer data*:
what the other nodes' backends need to reach its pods (the backend's name, a VTEP MAC, the
underlay address...). A datastore is where both live and how every agent learns about the
others: the Kubernetes API (subnets from ``spec.podCIDR(s)``, peer data in Node
annotations) or etcd (subnet leases carved from a cluster CIDR, peer data in the node's
record). Datastores are pure logic: no kernel work happens here.

The peer data is a JSON object with at least a string ``"backend"``; the datastore checks
only that much, the backend named there validates the rest.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from ..spec import InvalidNetworkConfig, IOFailure

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Peer data as published: a JSON object with a string "backend" and backend-specific keys.
PeerData = Mapping[str, Any]


class DatastoreError(IOFailure):
    """The datastore could not be read or written (unreachable, refused, unexpected answer).

    Code 5 (I/O failure): the agent retries; a configuration problem is an
    InvalidNetworkConfig instead.
    """


class SubnetLostError(DatastoreError):
    """This node's subnet lease expired and another node has taken the subnet since."""


@dataclass(frozen=True)
class NodeRecord:
    """What one node tells the others: its subnets and its peer data."""

    name: str
    subnets: tuple[Subnet, ...]
    peer: PeerData = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """The backend named in the peer data."""
        return str(self.peer["backend"])


@dataclass(frozen=True)
class PeerUpdate:
    """One step of a datastore's watch: the full desired set of peers and what changed.

    ``peers`` holds every other node that has subnets and valid peer data, by name (never
    the local node). ``changed`` names the nodes added, updated or removed since the previous
    update; after a (re)list, ``resync`` is true and ``changed`` is every name seen before or
    now. ``skipped`` maps nodes left out because their data is malformed to the reason: one
    bad node never hides the others.
    """

    peers: Mapping[str, NodeRecord]
    changed: frozenset[str]
    resync: bool = False
    skipped: Mapping[str, str] = field(default_factory=dict)


class Datastore(Protocol):
    """Where a node gets its subnets, publishes its peer data and follows the other nodes.

    The agent calls :meth:`acquire_subnets` once, :meth:`publish` whenever its peer data
    changes, iterates :meth:`watch` on a thread of its own, calls :meth:`renew` every
    :attr:`renew_interval` seconds, :meth:`leave` when the node is uninstalled and
    :meth:`close` on a clean shutdown.
    """

    #: The ``datastore`` name this implementation answers to.
    name: ClassVar[str]
    #: The agent-config keys only this datastore accepts.
    options: ClassVar[frozenset[str]]

    @property
    def node(self) -> str:
        """The local node's name."""
        ...

    @property
    def renew_interval(self) -> float | None:
        """Seconds between :meth:`renew` calls; None when nothing needs renewing."""
        ...

    def acquire_subnets(self) -> tuple[Subnet, ...]:
        """The local node's pod subnets (IPv4 first), claiming them if the datastore leases.

        Raises InvalidNetworkConfig naming the field when the datastore cannot give any
        (no ``spec.podCIDR``; a cluster CIDR too small for the subnet length) and
        AddressExhausted when every subnet is taken.
        """
        ...

    def publish(self, peer: PeerData) -> None:
        """Publish the local node's peer data for the other nodes (replacing what was there)."""
        ...

    def watch(self) -> Iterator[PeerUpdate]:
        """The peers: a full update after the first list, then one per change.

        Follows the datastore with list + watch, resuming from the last version seen after
        a dropped connection or a server restart, and relisting when that version is gone
        (HTTP 410 / compacted revision); nothing changed between a list and its watch is
        missed. Runs until :meth:`close`, which ends the iteration.
        """
        ...

    def renew(self) -> None:
        """Keep the local node's claim alive (a lease keepalive); a no-op where none expires.

        Raises SubnetLostError when the claim expired and someone else holds the subnet now.
        """
        ...

    def leave(self) -> None:
        """The node leaves the cluster for good (uninstall): remove what the datastore holds
        for it (its record and subnet claims) at once, from any process."""
        ...

    def close(self) -> None:
        """Release what the node holds for a clean shutdown and end any running watch."""
        ...


def validate_peer(node: str, peer: Any, where: str) -> PeerData:
    """``peer`` checked as peer data of ``node`` read from ``where``: a JSON object with a
    non-empty string "backend". Raises InvalidNetworkConfig naming the node and the field."""
    if not isinstance(peer, dict):
        raise InvalidNetworkConfig(
            f"node {node!r}: {where} must be a JSON object, got {type(peer).__name__}")
    backend = peer.get("backend")
    if not isinstance(backend, str) or not backend:
        raise InvalidNetworkConfig(
            f'node {node!r}: {where} needs a non-empty string "backend", got {backend!r}')
    return peer


def parse_subnets(node: str, values: Sequence[Any], where: str) -> tuple[Subnet, ...]:
    """CIDR strings (at most one per family) as networks, IPv4 first; errors name ``where``."""
    subnets: list[Subnet] = []
    for value in values:
        if not isinstance(value, str):
            raise InvalidNetworkConfig(
                f"node {node!r}: {where} must hold CIDR strings, got {value!r}")
        try:
            subnet = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise InvalidNetworkConfig(
                f"node {node!r}: {where} must hold CIDRs like 10.244.1.0/24, got {value!r}",
                str(exc)) from exc
        if any(s.version == subnet.version for s in subnets):
            raise InvalidNetworkConfig(
                f"node {node!r}: {where} has two IPv{subnet.version} subnets "
                f"({values!r}); one per family is allowed")
        subnets.append(subnet)
    return tuple(sorted(subnets, key=lambda s: s.version))


class StopFlag:
    """A thread-safe "closing" flag with interruptible waits (the watch loops' backoff)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask every loop to end."""
        self._event.set()

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the flag was set meanwhile."""
        return self._event.wait(seconds)


class Backoff:
    """Retry delays that double from ``first`` up to ``cap`` and reset on success."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        """The delay before the next retry."""
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        """Start from the shortest delay again."""
        self._next = self._first


def diff_peers(old: Mapping[str, NodeRecord],
               new: Mapping[str, NodeRecord]) -> frozenset[str]:
    """Names whose record differs between ``old`` and ``new`` (added, removed or changed)."""
    return frozenset(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


class WatchExpiredError(Exception):
    """A watch cannot resume from its position (etcd compacted the revision, the API
    server answered 410 Gone): the datastore must list everything again."""


Cursor = TypeVar("Cursor")
#: One change seen by a watch: the node's name and its raw item, None when it was deleted.
Change = tuple[str, Any]
#: Puts one raw item into ``peers`` (or ``skipped`` with the reason when it is malformed).
Apply = Callable[[dict[str, NodeRecord], dict[str, str], Any], None]


def follow_peers(stop: StopFlag,
                 list_all: Callable[[], tuple[Iterable[Any], Cursor]],
                 events: Callable[[Cursor], Iterator[tuple[Cursor, Sequence[Change]]]],
                 apply: Apply) -> Iterator[PeerUpdate]:
    """The list-then-watch loop both datastores run, as PeerUpdates.

    ``list_all`` returns every raw node item and the position to watch from; ``events``
    yields, from a position, batches of changes with the position after them, and returns
    when its stream ends (it is then reopened from the last position). A resync update
    follows every list; an event batch yields an update only when a peer changed.
    :class:`WatchExpiredError` makes it list again; :class:`DatastoreError` retries with a
    backoff until ``stop`` is set.
    """
    peers: dict[str, NodeRecord] = {}
    skipped: dict[str, str] = {}
    cursor: Any = None
    listed = False
    backoff = Backoff()
    while not stop.is_set():
        try:
            if not listed:
                items, cursor = list_all()
                new_peers: dict[str, NodeRecord] = {}
                skipped = {}
                for item in items:
                    apply(new_peers, skipped, item)
                changed = frozenset(peers) | frozenset(new_peers)
                peers = new_peers
                listed = True
                backoff.reset()
                yield PeerUpdate(dict(peers), changed, resync=True, skipped=dict(skipped))
            for position, changes in events(cursor):
                cursor = position
                backoff.reset()
                before = dict(peers)
                for name, item in changes:
                    if item is None:
                        peers.pop(name, None)
                        skipped.pop(name, None)
                    else:
                        apply(peers, skipped, item)
                changed = diff_peers(before, peers)
                if changed:
                    yield PeerUpdate(dict(peers), changed, skipped=dict(skipped))
        except WatchExpiredError:
            listed = False
        except DatastoreError:
            if stop.wait(backoff.next()):
                return
