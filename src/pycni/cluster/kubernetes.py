"""The ``kubernetes`` datastore: subnets from the Node's ``spec.podCIDR(s)``, peers in Nodes.

The node's pod subnets are the ones Kubernetes assigned it (kube-controller-manager's
``--allocate-node-cidrs``, or whoever created the Node): ``spec.podCIDRs`` (dual-stack), else
``spec.podCIDR``. The agent publishes its peer data as one JSON annotation,
``pycni.io/peer`` (the prefix is configurable), on its own Node through the ``nodes/status``
subresource, and follows every Node with list + watch from the list's resourceVersion, so a
Node that changes between the two is never missed (flannel#1145).

Credentials come from a kubeconfig (``kubeconfig``) or, without one, from the in-cluster
service-account files (``<serviceAccountDir>/token`` and ``ca.crt`` with
``KUBERNETES_SERVICE_HOST``/``_PORT``). The token file is read again when a request gets 401
(the kubelet rotates projected tokens), and the client is rebuilt when the kubeconfig or the
token file changes on disk: a rotated token never stops the agent (Multus#852).

The client is lightkube (typed models, sync client, list/watch with resourceVersion).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import httpx2 as httpx
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Node, NodeStatus

from .._json import loads
from ..kube import SERVICE_ACCOUNT_DIR, KubeCredentials
from ..spec import InvalidNetworkConfig
from ._base import (
    Backoff,
    Change,
    DatastoreError,
    NodeRecord,
    PeerData,
    PeerUpdate,
    StopFlag,
    Subnet,
    WatchExpiredError,
    follow_peers,
    parse_subnets,
    validate_peer,
)

DEFAULT_ANNOTATION_PREFIX = "pycni.io"
#: Seconds the API server keeps a quiet watch open before it ends it (lightkube then reopens
#: it from the last resourceVersion).
WATCH_SERVER_TIMEOUT = 60
#: How often a waiting watch looks at the stop flag.
POLL = 0.5
PATCH_ATTEMPTS = 5


def node_subnets(node: Any) -> tuple[Subnet, ...]:
    """A Node's pod subnets from ``spec.podCIDRs`` (else ``spec.podCIDR``); IPv4 first.

    Raises InvalidNetworkConfig naming the node and the field when it has none or they do
    not parse.
    """
    name = node.metadata.name
    spec = node.spec
    cidrs = list(spec.podCIDRs or []) if spec else []
    field = "spec.podCIDRs"
    if not cidrs and spec and spec.podCIDR:
        cidrs, field = [spec.podCIDR], "spec.podCIDR"
    if not cidrs:
        raise InvalidNetworkConfig(
            f'node {name!r} has no "spec.podCIDR": expected the pod subnet Kubernetes '
            "assigned it (kube-controller-manager --allocate-node-cidrs, or set it on the "
            "Node)")
    return parse_subnets(name, cidrs, field)


class KubernetesDatastore:
    """Node subnets and peer annotations in the Kubernetes API; see the module docstring."""

    name: ClassVar[str] = "kubernetes"
    options: ClassVar[frozenset[str]] = frozenset({
        "kubeconfig", "serviceAccountDir", "annotationPrefix"})

    def __init__(self, node: str, *, kubeconfig: str | None = None,
                 service_account_dir: str = SERVICE_ACCOUNT_DIR,
                 annotation_prefix: str = DEFAULT_ANNOTATION_PREFIX,
                 watch_timeout: int = WATCH_SERVER_TIMEOUT) -> None:
        self._node = node
        self._credentials = KubeCredentials(kubeconfig,
                                            service_account_dir=service_account_dir)
        self.annotation = f"{annotation_prefix}/peer"
        self._watch_timeout = watch_timeout
        self._stop = StopFlag()

    @classmethod
    def from_config(cls, node: str, config: Mapping[str, Any]) -> KubernetesDatastore:
        """Build from the agent config's kubernetes options (errors name the field)."""
        strings = {}
        for option in ("kubeconfig", "serviceAccountDir", "annotationPrefix"):
            value = config.get(option)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidNetworkConfig(f'invalid "{option}": expected a non-empty string, '
                                           f"got {value!r}")
            strings[option] = value
        prefix = strings["annotationPrefix"] or DEFAULT_ANNOTATION_PREFIX
        if "/" in prefix or len(prefix) > 253:
            raise InvalidNetworkConfig(
                f'invalid "annotationPrefix": expected a DNS subdomain like "pycni.io", '
                f"got {prefix!r}")
        return cls(node, kubeconfig=strings["kubeconfig"],
                   service_account_dir=strings["serviceAccountDir"] or SERVICE_ACCOUNT_DIR,
                   annotation_prefix=prefix)

    # -- credentials ------------------------------------------------------------------------

    def client(self, *, refresh: bool = False) -> Client:
        """The API client, rebuilt when the credential files changed (or ``refresh``)."""
        return self._credentials.client(refresh=refresh)

    def _request(self, call: Any) -> Any:
        """Run ``call(client)``; after a 401 rebuild the client from disk once and retry."""
        return self._credentials.request(call)

    # -- the Datastore protocol --------------------------------------------------------------

    @property
    def node(self) -> str:
        """The local node's name."""
        return self._node

    @property
    def renew_interval(self) -> float | None:
        """None: a Node's podCIDR holds until the Node is deleted; nothing to renew."""
        return None

    def acquire_subnets(self) -> tuple[Subnet, ...]:
        """The local Node's ``spec.podCIDR(s)``."""
        try:
            node = self._request(lambda c: c.get(Node, self._node))
        except (ApiError, httpx.HTTPError) as exc:
            raise _translate(exc, f"read Node {self._node!r}") from exc
        return node_subnets(node)

    def publish(self, peer: PeerData) -> None:
        """Write the peer annotation on the local Node (merge patch of ``nodes/status``)."""
        validate_peer(self._node, dict(peer), "peer data")
        body = {"metadata": {"annotations": {
            self.annotation: json.dumps(dict(peer), sort_keys=True)}}}
        backoff = Backoff(0.2, 2.0)
        for attempt in range(PATCH_ATTEMPTS):
            try:
                # Through nodes/status: the ClusterRole grants only that, so the agent can
                # change its Node's metadata but not its spec (taints, podCIDR).
                self._request(lambda c: c.patch(NodeStatus, self._node, body))
            except ApiError as exc:
                retriable = exc.status.code in (409, 429) or (exc.status.code or 0) >= 500
                if not retriable or attempt == PATCH_ATTEMPTS - 1:
                    raise _translate(exc, f"annotate Node {self._node!r}") from exc
            except httpx.HTTPError as exc:
                if attempt == PATCH_ATTEMPTS - 1:
                    raise _translate(exc, f"annotate Node {self._node!r}") from exc
            else:
                return
            self._stop.wait(backoff.next())

    def renew(self) -> None:
        """Nothing expires: a no-op."""

    def leave(self) -> None:
        """Nothing to delete: the Node object (and its subnets) belong to the cluster, and
        the node's controller removes it when the machine goes."""

    def close(self) -> None:
        """End any running watch and close the HTTP clients."""
        self._stop.set()
        self._credentials.close()

    def watch(self) -> Iterator[PeerUpdate]:
        """List every Node, then watch from the list's resourceVersion; relist on 410."""

        def events(version: str) -> Iterator[tuple[str, list[Change]]]:
            for kind, node in self._events(version):
                name = node.metadata.name
                yield node.metadata.resourceVersion, (
                    [(name, None)] if kind == "DELETED"
                    else [(name, node)] if kind in ("ADDED", "MODIFIED") else [])

        return follow_peers(self._stop, self._list, events, self._apply)

    # -- helpers -----------------------------------------------------------------------------

    def _list(self) -> tuple[list[Any], str]:
        try:
            def do_list(client: Client) -> tuple[list[Any], str]:
                listing = client.list(Node)
                nodes = list(listing)
                return nodes, listing.resourceVersion
            result: tuple[list[Any], str] = self._request(do_list)
        except (ApiError, httpx.HTTPError) as exc:
            raise _translate(exc, "list Nodes") from exc
        return result

    def _events(self, version: str) -> Iterator[tuple[str, Any]]:
        """Watch events from ``version`` on; raises WatchExpiredError on 410 (the
        resourceVersion is too old), DatastoreError otherwise.

        lightkube's watch blocks in a read; it runs on a helper thread so this generator can
        notice :meth:`close` within POLL seconds.
        """
        items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1024)
        done = threading.Event()
        client = self.client()

        def read() -> None:
            try:
                for event in client.watch(Node, resource_version=version,
                                          server_timeout=self._watch_timeout):
                    if done.is_set() or self._stop.is_set():
                        return
                    items.put(("event", event))
            except Exception as exc:  # handed to the consumer thread, which decides
                items.put(("error", exc))

        threading.Thread(target=read, name=f"pycni-watch-{self._node}", daemon=True).start()
        try:
            while not self._stop.is_set():
                try:
                    tag, item = items.get(timeout=POLL)
                except queue.Empty:
                    continue
                if tag == "event":
                    yield item
                    continue
                if isinstance(item, ApiError):
                    if item.status.code == 410:
                        raise WatchExpiredError from item
                    if item.status.code == 401:
                        self.client(refresh=True)
                raise _translate(item, "watch Nodes") from item
        finally:
            done.set()

    def _apply(self, peers: dict[str, NodeRecord], skipped: dict[str, str], node: Any) -> None:
        name = node.metadata.name
        peers.pop(name, None)
        skipped.pop(name, None)
        if name == self._node:
            return
        raw = (node.metadata.annotations or {}).get(self.annotation)
        if raw is None:
            return  # no agent has published for this node (yet): not a peer
        where = f"annotation {self.annotation!r}"
        try:
            try:
                data = loads(raw)
            except ValueError as exc:
                raise InvalidNetworkConfig(
                    f"node {name!r}: {where} must hold a JSON object, got {raw[:200]!r}",
                    str(exc)) from exc
            peers[name] = NodeRecord(name, node_subnets(node), validate_peer(name, data, where))
        except InvalidNetworkConfig as exc:
            skipped[name] = exc.msg


def _translate(exc: Exception, action: str) -> DatastoreError:
    """A lightkube/httpx failure as a DatastoreError saying what failed and why."""
    if isinstance(exc, ApiError):
        status = exc.status
        hint = ""
        if status.code == 403:
            hint = " (check the agent's ClusterRole: deploy/kubernetes/rbac.yaml)"
        return DatastoreError(f"Kubernetes API: cannot {action}: HTTP {status.code} "
                              f"{status.reason or ''}{hint}", status.message or "")
    if isinstance(exc, httpx.HTTPError):
        return DatastoreError(f"Kubernetes API: cannot {action}: {type(exc).__name__}",
                              str(exc))
    if isinstance(exc, DatastoreError | InvalidNetworkConfig):
        return DatastoreError(exc.msg, exc.details)
    return DatastoreError(f"Kubernetes API: cannot {action}: {type(exc).__name__}", str(exc))
