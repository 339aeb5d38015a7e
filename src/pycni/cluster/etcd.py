"""The ``etcd`` datastore: subnet leases carved from a cluster CIDR kept in etcd (v3 API).

Layout under the prefix (default ``/pycni/network``)::

    <prefix>/config              {"Network": "10.244.0.0/16", "SubnetLen": 24,
                                  "IPv6Network": "fd00:10:244::/56", "IPv6SubnetLen": 64,
                                  "Backend": {"Type": "vxlan"}}       (written by the admin)
    <prefix>/subnets/<cidr>      the node name holding that subnet     (leased)
    <prefix>/nodes/<node>        {"subnets": [...], "peer": {...}}     (leased)
    <prefix>/owners/<node>       {"subnets": [...]}: last subnets held (not leased)

A node claims its subnets in one transaction that requires every ``subnets/<cidr>`` key to be
absent (create_revision == 0) or already its own, so two agents never get the same subnet.
The claim and the node's record hang on a TTL lease that :meth:`EtcdDatastore.renew` keeps
alive and :meth:`EtcdDatastore.close` revokes; a node that dies stops renewing, its keys
expire after the TTL, and only then can another node take its subnet. A node that is
uninstalled deletes its keys at once (:meth:`EtcdDatastore.leave`), lease or not. A restarted agent
takes its previous subnets back: from its record while that lives, else from the ``owners``
hint when they are still free.

The client is python-etcd3gw, which speaks etcd's v3 JSON gateway (``/v3/...``) over
``requests``; the watch stream is read here because etcd3gw's watcher drops the
"canceled, compacted" answer this module needs to relist.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import json
import random
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_exc

from .._json import loads
from ..spec import AddressExhausted, InvalidNetworkConfig
from ._base import (
    Change,
    DatastoreError,
    NodeRecord,
    PeerData,
    PeerUpdate,
    StopFlag,
    Subnet,
    SubnetLostError,
    WatchExpiredError,
    follow_peers,
    parse_subnets,
    validate_peer,
)

DEFAULT_PREFIX = "/pycni/network"
DEFAULT_LEASE_TTL = 60
#: How many claim transactions to try before giving up (each failure means another node
#: took a candidate between our read and our write; a fresh read follows).
CLAIM_ATTEMPTS = 64
#: How long a quiet watch stream is read before it is reopened from the last revision (the
#: stop flag is checked in between).
WATCH_READ_TIMEOUT = 10.0
#: The highest subnet length per family (flannel's limit for IPv4: a /31 has no room).
MAX_SUBNET_LEN = {4: 30, 6: 126}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with ``prefix``."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _subnet_key_part(subnet: Subnet) -> str:
    return str(subnet).replace("/", "-")


@dataclass(frozen=True)
class NetworkConfig:
    """The cluster's network config, read from ``<prefix>/config``."""

    networks: tuple[Subnet, ...]
    subnet_lens: Mapping[int, int]
    backend: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: str, key: str) -> NetworkConfig:
        """Parse the JSON at ``key``; errors are InvalidNetworkConfig naming key and field."""
        try:
            data = loads(raw)
        except ValueError as exc:
            raise InvalidNetworkConfig(f"etcd key {key} must hold a JSON object",
                                       str(exc)) from exc
        if not isinstance(data, dict):
            raise InvalidNetworkConfig(f"etcd key {key} must hold a JSON object, "
                                       f"got {type(data).__name__}")
        known = {"Network", "SubnetLen", "IPv6Network", "IPv6SubnetLen", "Backend"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidNetworkConfig(
                f"etcd key {key}: unknown field {unknown[0]!r} "
                f"(known: {', '.join(sorted(known))})")
        networks: list[Subnet] = []
        lens: dict[int, int] = {}
        for version, net_field, len_field in ((4, "Network", "SubnetLen"),
                                              (6, "IPv6Network", "IPv6SubnetLen")):
            if data.get(net_field) is None:
                if data.get(len_field) is not None:
                    raise InvalidNetworkConfig(
                        f'etcd key {key}: "{len_field}" is set but "{net_field}" is not')
                continue
            network = cls._network(data[net_field], version, net_field, key)
            default_len = (max(24, network.prefixlen + 1) if version == 4
                           else max(64, network.prefixlen + 1))
            length = data.get(len_field, default_len)
            if type(length) is not int or not 0 < length <= MAX_SUBNET_LEN[version]:
                raise InvalidNetworkConfig(
                    f'etcd key {key}: invalid "{len_field}": expected an integer between 1 '
                    f"and {MAX_SUBNET_LEN[version]}, got {length!r}")
            if length < network.prefixlen:
                raise InvalidNetworkConfig(
                    f'etcd key {key}: invalid "{len_field}": {net_field} {network} is too '
                    f"small for /{length} subnets (the subnet length must be at least "
                    f"{network.prefixlen})")
            networks.append(network)
            lens[version] = length
        if not networks:
            raise InvalidNetworkConfig(
                f'etcd key {key}: needs "Network" (IPv4) or "IPv6Network" (or both)')
        backend = data.get("Backend", {"Type": "vxlan"})
        if not isinstance(backend, dict) or not isinstance(backend.get("Type", "vxlan"), str):
            raise InvalidNetworkConfig(
                f'etcd key {key}: invalid "Backend": expected an object like '
                f'{{"Type": "vxlan"}}, got {backend!r}')
        return cls(tuple(networks), lens, {"Type": "vxlan", **backend})

    @staticmethod
    def _network(value: Any, version: int, name: str, key: str) -> Subnet:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except (TypeError, ValueError) as exc:
            raise InvalidNetworkConfig(
                f'etcd key {key}: invalid "{name}": expected an IPv{version} CIDR, '
                f"got {value!r}", str(exc)) from exc
        if network.version != version:
            raise InvalidNetworkConfig(
                f'etcd key {key}: invalid "{name}": expected an IPv{version} CIDR, '
                f"got {value!r}")
        return network

    def subnet_len(self, version: int) -> int:
        """The subnet length configured for IP ``version``."""
        return self.subnet_lens[version]


class EtcdDatastore:
    """Subnet leases and peer records in etcd; see the module docstring for the layout."""

    name: ClassVar[str] = "etcd"
    options: ClassVar[frozenset[str]] = frozenset({
        "etcdEndpoints", "etcdPrefix", "etcdCAFile", "etcdCertFile", "etcdKeyFile",
        "leaseTTL"})

    def __init__(self, node: str, endpoints: list[str], *, prefix: str = DEFAULT_PREFIX,
                 lease_ttl: int = DEFAULT_LEASE_TTL, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        self._node = node
        self._prefix = prefix.rstrip("/")
        self._ttl = lease_ttl
        self._clients = [self._make_client(url, ca_file, cert_file, key_file)
                         for url in endpoints]
        self._current = 0
        self._lease: int | None = None
        self._subnets: tuple[Subnet, ...] = ()
        self._peer: PeerData | None = None
        self._stop = StopFlag()
        self._lock = threading.Lock()
        self._streams: set[requests.Response] = set()

    @classmethod
    def from_config(cls, node: str, config: Mapping[str, Any]) -> EtcdDatastore:
        """Build from the agent config's etcd options (validated, errors name the field)."""
        endpoints = config.get("etcdEndpoints")
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if (not isinstance(endpoints, list) or not endpoints
                or not all(isinstance(e, str) for e in endpoints)):
            raise InvalidNetworkConfig(
                f'invalid "etcdEndpoints": expected a list of URLs like '
                f'["http://127.0.0.1:2379"], got {endpoints!r}')
        for url in endpoints:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidNetworkConfig(
                    f'invalid "etcdEndpoints": expected http(s)://host:port, got {url!r}')
        prefix = config.get("etcdPrefix", DEFAULT_PREFIX)
        if not isinstance(prefix, str) or not prefix.startswith("/") or prefix == "/":
            raise InvalidNetworkConfig(
                f'invalid "etcdPrefix": expected a key path like "/pycni/network", '
                f"got {prefix!r}")
        ttl = config.get("leaseTTL", DEFAULT_LEASE_TTL)
        if type(ttl) is not int or not 2 <= ttl <= 86400:
            raise InvalidNetworkConfig(
                f'invalid "leaseTTL": expected seconds between 2 and 86400, got {ttl!r}')
        files = {}
        for option in ("etcdCAFile", "etcdCertFile", "etcdKeyFile"):
            value = config.get(option)
            if value is not None and not isinstance(value, str):
                raise InvalidNetworkConfig(f'invalid "{option}": expected a path, '
                                           f"got {value!r}")
            files[option] = value
        if (files["etcdCertFile"] is None) != (files["etcdKeyFile"] is None):
            raise InvalidNetworkConfig(
                '"etcdCertFile" and "etcdKeyFile" go together: set both or neither')
        return cls(node, endpoints, prefix=prefix, lease_ttl=ttl,
                   ca_file=files["etcdCAFile"], cert_file=files["etcdCertFile"],
                   key_file=files["etcdKeyFile"])

    @staticmethod
    def _make_client(url: str, ca_file: str | None, cert_file: str | None,
                     key_file: str | None) -> etcd3gw.Etcd3Client:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 2379
        # etcd 3.4+ serves the gateway at /v3/; naming it skips etcd3gw's /version probe.
        return etcd3gw.Etcd3Client(
            host=parts.hostname or "127.0.0.1", port=port, protocol=parts.scheme,
            ca_cert=ca_file, cert_cert=cert_file, cert_key=key_file, timeout=10,
            api_path="/v3/")

    # -- the Datastore protocol --------------------------------------------------------------

    @property
    def node(self) -> str:
        """The local node's name."""
        return self._node

    @property
    def renew_interval(self) -> float | None:
        """A third of the lease TTL: two keepalives may fail before the lease expires."""
        return self._ttl / 3

    @property
    def lease_id(self) -> int | None:
        """The etcd lease that holds this node's keys, once subnets were acquired."""
        return self._lease

    def network_config(self) -> NetworkConfig:
        """The cluster network config from ``<prefix>/config``."""
        key = f"{self._prefix}/config"
        kvs = self._range(key)[0]
        if not kvs:
            raise InvalidNetworkConfig(
                f"etcd key {key} is missing: write the network config there, e.g. "
                '{"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}')
        return NetworkConfig.parse(_unb64(kvs[0].get("value", "")), key)

    def acquire_subnets(self) -> tuple[Subnet, ...]:
        """Claim one subnet per configured family (this node's previous ones when possible)."""
        config = self.network_config()
        lease = self._grant()
        for _ in range(CLAIM_ATTEMPTS):
            claims = self._claims()
            record, record_rev = self._node_record()
            wanted = self._choose(config, claims, record)
            if self._claim(wanted, claims, record_rev, lease, record):
                old, self._lease, self._subnets = self._lease, lease, wanted
                if old is not None and old != lease:
                    self._revoke(old)
                return wanted
        raise DatastoreError(
            f"node {self._node!r}: could not claim a subnet in {CLAIM_ATTEMPTS} attempts "
            "(other nodes kept taking the candidates); try again")

    def publish(self, peer: PeerData) -> None:
        """Write the node's record (subnets and ``peer``) under its lease."""
        validate_peer(self._node, dict(peer), "peer data")
        if self._lease is None:
            raise DatastoreError(f"node {self._node!r}: publish before acquire_subnets")
        self._peer = dict(peer)
        self._call("/kv/put", {"key": _b64(self._record_key(self._node)),
                               "value": _b64(self._record_json()), "lease": self._lease})

    def renew(self) -> None:
        """Refresh the lease; if it expired, claim the same subnets again while they are free."""
        if self._lease is None:
            return
        answer = self._call("/lease/keepalive", {"ID": self._lease})
        if int(answer.get("result", {}).get("TTL", 0)) > 0:
            return
        # The lease expired (the agent or etcd was away longer than the TTL): our keys are
        # gone, and another node may have claimed the subnet since.
        lease = self._grant()
        claims = self._claims()
        taken = {str(s): node for s, (node, _) in claims.items()
                 if node != self._node and s in self._subnets}
        record_rev = self._node_record()[1]
        if taken or not self._claim(self._subnets, claims, record_rev, lease, None):
            self._revoke(lease)
            holders = taken or "another node (claimed meanwhile)"
            raise SubnetLostError(
                f"node {self._node!r}: the lease on {', '.join(map(str, self._subnets))} "
                f"expired and it was taken by {holders}; the agent must start over")
        self._lease = lease

    def close(self) -> None:
        """Revoke the lease (the node's claim and record go at once) and end the watch."""
        self._stop.set()
        with self._lock:
            streams = list(self._streams)
        for response in streams:
            _shutdown(response)
        if self._lease is not None:
            with contextlib.suppress(DatastoreError):
                self._revoke(self._lease)
            self._lease = None

    def leave(self) -> None:
        """The node leaves the cluster for good: delete its record, its subnet claims and its
        owners hint at once, also from a process that never held the lease (``pycni cluster
        uninstall`` after the agent stopped), so the other nodes drop its routes now rather
        than when the lease expires.

        One transaction, guarded by the owners record and by each claim's mod_revision as
        read: only keys that still name this node are deleted, never a subnet another node
        claimed meanwhile; a concurrent change means a fresh read and another try.
        """
        owners_key = f"{self._prefix}/owners/{self._node}"
        for _ in range(CLAIM_ATTEMPTS):
            owners = self._range(owners_key)[0]
            record_rev = self._node_record()[1]
            compare = [{"key": _b64(owners_key), "target": "MOD", "result": "EQUAL",
                        "mod_revision": int(owners[0]["mod_revision"]) if owners else 0},
                       {"key": _b64(self._record_key(self._node)), "target": "MOD",
                        "result": "EQUAL", "mod_revision": record_rev}]
            delete = [owners_key, self._record_key(self._node)]
            for subnet, (holder, rev) in self._claims().items():
                if holder == self._node:
                    key = f"{self._prefix}/subnets/{_subnet_key_part(subnet)}"
                    compare.append({"key": _b64(key), "target": "MOD", "result": "EQUAL",
                                    "mod_revision": rev})
                    delete.append(key)
            answer = self._call("/kv/txn", {"compare": compare, "success": [
                {"request_delete_range": {"key": _b64(key)}} for key in delete]})
            if answer.get("succeeded", False):
                self._subnets = ()
                return
        raise DatastoreError(
            f"node {self._node!r}: could not remove its keys in {CLAIM_ATTEMPTS} attempts "
            "(they kept changing); try again")

    def watch(self) -> Iterator[PeerUpdate]:
        """Follow ``<prefix>/nodes/``: list, then watch from the list's revision + 1."""
        nodes_prefix = f"{self._prefix}/nodes/"

        def list_all() -> tuple[list[dict[str, Any]], int]:
            return self._range(nodes_prefix, prefix=True)

        def events(revision: int) -> Iterator[tuple[int, list[Change]]]:
            for batch, last in self._stream(nodes_prefix, revision + 1):
                yield last, [(_unb64(e["kv"]["key"])[len(nodes_prefix):],
                              None if e.get("type") == "DELETE" else e["kv"]) for e in batch]

        return follow_peers(self._stop, list_all, events,
                            functools.partial(self._apply, nodes_prefix=nodes_prefix))

    # -- helpers -----------------------------------------------------------------------------

    def _record_key(self, node: str) -> str:
        return f"{self._prefix}/nodes/{node}"

    def _record_json(self) -> str:
        record: dict[str, Any] = {"subnets": [str(s) for s in self._subnets]}
        if self._peer is not None:
            record["peer"] = self._peer
        return json.dumps(record, sort_keys=True)

    def _apply(self, peers: dict[str, NodeRecord], skipped: dict[str, str],
               kv: Mapping[str, Any], nodes_prefix: str) -> None:
        """Put one ``nodes/<name>`` key into ``peers`` (or ``skipped`` when malformed)."""
        key = _unb64(kv["key"])
        name = key[len(nodes_prefix):]
        if name == self._node:
            return
        peers.pop(name, None)
        skipped.pop(name, None)
        try:
            data = loads(_unb64(kv.get("value", "")))
        except ValueError as exc:
            skipped[name] = f"node {name!r}: etcd key {key} is not valid JSON: {exc}"
            return
        if not isinstance(data, dict):
            skipped[name] = (f"node {name!r}: etcd key {key} must hold a JSON object, "
                             f"got {type(data).__name__}")
            return
        if data.get("peer") is None:
            return  # claimed, not published yet: not a peer so far
        subnets = data.get("subnets")
        if not isinstance(subnets, list) or not subnets:
            skipped[name] = (f'node {name!r}: etcd key {key} needs a non-empty list "subnets", '
                             f"got {subnets!r}")
            return
        try:
            peers[name] = NodeRecord(name, parse_subnets(name, subnets, f"{key} subnets"),
                                     validate_peer(name, data["peer"], f"{key} peer"))
        except InvalidNetworkConfig as exc:
            skipped[name] = exc.msg

    def _choose(self, config: NetworkConfig, claims: Mapping[Subnet, tuple[str, int]],
                record: Mapping[str, Any] | None) -> tuple[Subnet, ...]:
        """This node's subnets: the ones it holds or held if still ours or free, else new."""
        previous: list[Subnet] = []
        for source in (record, self._owner_hint()):
            if source and isinstance(source.get("subnets"), list):
                # A stale or hand-edited hint is only a preference: ignore what does not parse.
                with contextlib.suppress(InvalidNetworkConfig):
                    previous = list(parse_subnets(self._node, source["subnets"], "subnets"))
                    break
        chosen: list[Subnet] = []
        for network in config.networks:
            length = config.subnet_len(network.version)
            keep = [s for s in previous if s.version == network.version
                    and s.prefixlen == length and s.subnet_of(network)  # type: ignore[arg-type]
                    and claims.get(s, (self._node, 0))[0] == self._node]
            chosen.append(keep[0] if keep else self._free_subnet(network, length, claims))
        return tuple(chosen)

    def _free_subnet(self, network: Subnet, length: int,
                     claims: Mapping[Subnet, tuple[str, int]]) -> Subnet:
        """A random free /length subnet of ``network``: many agents starting at once then
        rarely reach for the same one, so the claim transactions rarely collide."""
        taken = {s for s in claims if s.version == network.version}
        count = 1 << (length - network.prefixlen)
        step = 1 << (network.max_prefixlen - length)
        base = int(network.network_address)

        def nth(index: int) -> Subnet:
            return ipaddress.ip_network((base + index * step, length))

        rng = random.SystemRandom()
        if count - len(taken) > 4 * len(taken) + 64:
            # Mostly free (always so for IPv6 /64s): a few random probes find one.
            for _ in range(64):
                candidate = nth(rng.randrange(count))
                if candidate not in taken:
                    return candidate
        free = [index for index in range(count) if nth(index) not in taken]
        if not free:
            raise AddressExhausted(
                f"node {self._node!r}: every /{length} subnet of {network} is taken "
                f"({count} nodes hold one); grow the cluster CIDR or lengthen the subnets")
        return nth(rng.choice(free))

    def _claim(self, subnets: tuple[Subnet, ...], claims: Mapping[Subnet, tuple[str, int]],
               record_rev: int, lease: int, record: Mapping[str, Any] | None) -> bool:
        """One transaction: every subnet key absent or still ours (unchanged since read), the
        node's record unchanged; then all of them written under ``lease``."""
        compare = []
        success = []
        for subnet in subnets:
            key = _b64(f"{self._prefix}/subnets/{_subnet_key_part(subnet)}")
            holder = claims.get(subnet)
            if holder is None:
                compare.append({"key": key, "target": "CREATE", "result": "EQUAL",
                                "create_revision": 0})
            else:
                compare.append({"key": key, "target": "MOD", "result": "EQUAL",
                                "mod_revision": holder[1]})
            success.append({"request_put": {"key": key, "value": _b64(self._node),
                                            "lease": lease}})
        record_key = _b64(self._record_key(self._node))
        compare.append({"key": record_key, "target": "MOD", "result": "EQUAL",
                        "mod_revision": record_rev})
        if self._peer is None and record is not None and isinstance(record.get("peer"), dict):
            self._peer = record["peer"]  # the previous incarnation's peer data, until publish
        saved, self._subnets = self._subnets, subnets
        try:
            success.append({"request_put": {"key": record_key, "value": _b64(self._record_json()),
                                             "lease": lease}})
        finally:
            self._subnets = saved
        success.append({"request_put": {
            "key": _b64(f"{self._prefix}/owners/{self._node}"),
            "value": _b64(json.dumps({"subnets": [str(s) for s in subnets]}))}})
        answer = self._call("/kv/txn", {"compare": compare, "success": success})
        return bool(answer.get("succeeded", False))

    def _claims(self) -> dict[Subnet, tuple[str, int]]:
        """Every claimed subnet: (holder, mod_revision)."""
        prefix = f"{self._prefix}/subnets/"
        claims: dict[Subnet, tuple[str, int]] = {}
        for kv in self._range(prefix, prefix=True)[0]:
            part = _unb64(kv["key"])[len(prefix):].replace("-", "/")
            with contextlib.suppress(ValueError):  # a foreign key under our prefix
                claims[ipaddress.ip_network(part)] = (_unb64(kv.get("value", "")),
                                                      int(kv["mod_revision"]))
        return claims

    def _node_record(self) -> tuple[dict[str, Any] | None, int]:
        kvs = self._range(self._record_key(self._node))[0]
        if not kvs:
            return None, 0
        try:
            data = loads(_unb64(kvs[0].get("value", "")))
        except ValueError:
            data = None
        return (data if isinstance(data, dict) else None), int(kvs[0]["mod_revision"])

    def _owner_hint(self) -> dict[str, Any] | None:
        kvs = self._range(f"{self._prefix}/owners/{self._node}")[0]
        if not kvs:
            return None
        with contextlib.suppress(ValueError):
            data = loads(_unb64(kvs[0].get("value", "")))
            return data if isinstance(data, dict) else None
        return None

    def _grant(self) -> int:
        return int(self._call("/lease/grant", {"TTL": self._ttl, "ID": 0})["ID"])

    def _revoke(self, lease: int) -> None:
        # A lease that expired meanwhile is "not found": nothing left to release.
        with contextlib.suppress(DatastoreError):
            self._call("/kv/lease/revoke", {"ID": lease})

    def _range(self, key: str, *, prefix: bool = False) -> tuple[list[dict[str, Any]], int]:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _prefix_end(key)
        answer = self._call("/kv/range", body)
        return list(answer.get("kvs", [])), int(answer["header"]["revision"])

    def _call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint that answers (the last good one first)."""
        errors = []
        for attempt in range(len(self._clients)):
            index = (self._current + attempt) % len(self._clients)
            client = self._clients[index]
            try:
                answer = client.post(client.get_url(path), json=body)
            except (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError) as exc:
                errors.append(f"{client.base_url}: {exc}")
                continue
            except etcd_exc.Etcd3Exception as exc:
                raise DatastoreError(f"etcd {path} failed at {client.base_url}",
                                     str(exc.detail_text or exc)) from exc
            self._current = index
            if not isinstance(answer, dict):
                raise DatastoreError(f"etcd {path}: expected a JSON object, got {answer!r}")
            return answer
        raise DatastoreError(f"etcd is unreachable ({path})", "; ".join(errors))

    def _stream(self, key_prefix: str,
                start: int) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """Watch ``key_prefix`` from revision ``start``: (events, their revision) batches.

        Returns when the stream goes quiet for WATCH_READ_TIMEOUT (the caller reopens it
        from the last revision), raises WatchExpiredError when ``start`` was compacted
        away, DatastoreError when etcd cannot be reached.
        """
        client = self._clients[self._current]
        body: dict[str, Any] = {"create_request": {"key": _b64(key_prefix),
                                   "range_end": _prefix_end(key_prefix),
                                   "start_revision": start}}
        try:
            response = client.session.post(client.get_url("/watch"), json=body, stream=True,
                                           timeout=(5, WATCH_READ_TIMEOUT))
        except requests.RequestException as exc:
            self._current = (self._current + 1) % len(self._clients)
            raise DatastoreError(f"etcd watch at {client.base_url} failed", str(exc)) from exc
        with self._lock:
            self._streams.add(response)
        try:
            if response.status_code != 200:
                raise DatastoreError(f"etcd watch at {client.base_url}: HTTP "
                                     f"{response.status_code}", response.text[:500])
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise DatastoreError(f"etcd watch at {client.base_url} failed",
                                         json.dumps(message["error"]))
                result = message.get("result", {})
                if int(result.get("compact_revision", 0) or 0) > 0:
                    raise WatchExpiredError
                if result.get("canceled"):
                    raise DatastoreError(f"etcd canceled the watch at {client.base_url}",
                                         str(result.get("cancel_reason", "")))
                events = result.get("events", [])
                if events:
                    yield events, max(int(e["kv"]["mod_revision"]) for e in events)
        except requests.exceptions.ConnectionError as exc:
            # A read timeout (a quiet stream) arrives here too: reopen from the last revision.
            if isinstance(exc.__context__, TimeoutError) or "timed out" in str(exc):
                return
            raise DatastoreError(f"etcd watch at {client.base_url} broke", str(exc)) from exc
        except (requests.RequestException, ValueError) as exc:
            raise DatastoreError(f"etcd watch at {client.base_url} broke", str(exc)) from exc
        finally:
            with self._lock:
                self._streams.discard(response)
            response.close()


def _shutdown(response: requests.Response) -> None:
    """Wake a thread blocked reading ``response``'s stream (close() alone does not)."""
    with contextlib.suppress(Exception):
        sock = response.raw.connection.sock
        sock.shutdown(2)  # socket.SHUT_RDWR
