"""The cluster datastores against real servers: etcd from Debian, kube-apiserver v1.20.2."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pycni.cluster import (
    EtcdDatastore,
    PeerUpdate,
    SubnetLostError,
)
from pycni.spec import AddressExhausted, InvalidNetworkConfig
from pycni.testing import EtcdServer

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

VXLAN = {"backend": "vxlan", "vtepMAC": "02:00:00:00:00:01", "underlay": "192.0.2.1"}


def poll(check: Callable[[], Any], what: str, deadline: float = 30.0) -> Any:
    """``check()``'s first truthy result, polling until ``deadline`` seconds passed."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class Follower:
    """Iterates a datastore's watch on a thread; the updates land in a queue."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.updates: queue.Queue[PeerUpdate] = queue.Queue()
        self.latest: PeerUpdate | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for update in self.store.watch():
            self.updates.put(update)

    def until(self, check: Callable[[PeerUpdate], bool], what: str,
              deadline: float = 30.0) -> PeerUpdate:
        """The first update (or the latest one seen) for which ``check`` holds."""
        end = time.monotonic() + deadline
        if self.latest is not None and check(self.latest):
            return self.latest
        while True:
            try:
                self.latest = self.updates.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"timed out waiting for {what}; last update: {self.latest}")
            if check(self.latest):
                return self.latest

    def close(self) -> None:
        self.store.close()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the watch did not end on close()"


# -- etcd --------------------------------------------------------------------------------------


@pytest.fixture
def etcd_net(etcd_server: EtcdServer, etcd_prefix: str) -> Callable[..., EtcdDatastore]:
    """A factory of etcd datastores on a fresh prefix holding a /16 split into /24s."""
    prefix = etcd_prefix + "net"
    stores: list[EtcdDatastore] = []

    def make(node: str, *, ttl: int = 30, server: EtcdServer = etcd_server,
             config: dict[str, Any] | None = None) -> EtcdDatastore:
        if config is not None or server.get(f"{prefix}/config") is None:
            body = config or {"Network": "10.40.0.0/16", "SubnetLen": 24}
            server.put(f"{prefix}/config", json.dumps(body))
        store = EtcdDatastore(node, [server.url], prefix=prefix, lease_ttl=ttl)
        stores.append(store)
        return store

    yield make  # type: ignore[misc]
    for store in stores:
        store.close()


def test_etcd_200_concurrent_acquirers_get_distinct_subnets(
        etcd_server: EtcdServer, etcd_net: Callable[..., EtcdDatastore]) -> None:
    stores = [etcd_net(f"node-{i}") for i in range(200)]
    start = threading.Barrier(50)

    def acquire(store: EtcdDatastore) -> str:
        if int(store.node.split("-")[1]) < 50:
            start.wait()  # the first 50 hit etcd at the same moment
        (subnet,) = store.acquire_subnets()
        return str(subnet)

    with ThreadPoolExecutor(max_workers=50) as pool:
        subnets = list(pool.map(acquire, stores))
    assert len(set(subnets)) == 200, sorted(subnets)
    network = ipaddress.ip_network("10.40.0.0/16")
    assert all(ipaddress.ip_network(s).subnet_of(network) for s in subnets)  # type: ignore[arg-type]
    claims = etcd_server.get_prefix(f"{stores[0]._prefix}/subnets/")
    holders = sorted(v.decode() for v in claims.values())
    assert holders == sorted(s.node for s in stores)


def test_etcd_unrenewed_lease_expires_and_only_then_its_subnet_is_reused(
        etcd_net: Callable[..., EtcdDatastore]) -> None:
    config = {"Network": "10.41.0.0/24", "SubnetLen": 25}  # room for two nodes
    a = etcd_net("a", ttl=2, config=config)
    b = etcd_net("b", ttl=2)
    (a_subnet,) = a.acquire_subnets()
    (b_subnet,) = b.acquire_subnets()
    assert a_subnet != b_subnet
    c = etcd_net("c", ttl=2)
    with pytest.raises(AddressExhausted, match=r"10\.41\.0\.0/24"):
        c.acquire_subnets()

    renewing = threading.Event()

    def keep_b_alive() -> None:
        while not renewing.wait(0.5):
            b.renew()

    keeper = threading.Thread(target=keep_b_alive, daemon=True)
    keeper.start()
    try:
        def c_gets_one() -> tuple[Any, ...] | None:
            try:
                return c.acquire_subnets()
            except AddressExhausted:
                # While c is refused, a's lease must still be alive.
                return None
        got = poll(c_gets_one, "a's lease to expire")
    finally:
        renewing.set()
        keeper.join()
    assert got == (a_subnet,)
    ttl = a._call("/kv/lease/timetolive", {"ID": a.lease_id})
    assert int(ttl.get("TTL", -1)) <= 0  # a's lease did expire: c did not steal a live one
    with pytest.raises(SubnetLostError, match="node 'a'"):
        a.renew()
    b.renew()  # the renewed one is still held


def test_etcd_refused_while_lease_alive_then_reused(
        etcd_net: Callable[..., EtcdDatastore]) -> None:
    config = {"Network": "10.42.0.0/25", "SubnetLen": 25}  # room for one node
    a = etcd_net("a", ttl=3, config=config)
    (subnet,) = a.acquire_subnets()
    b = etcd_net("b", ttl=3)
    with pytest.raises(AddressExhausted, match=r"every /25 subnet of 10\.42\.0\.0/25 is taken"):
        b.acquire_subnets()
    a.renew()
    with pytest.raises(AddressExhausted):
        b.acquire_subnets()
    a.close()  # a clean shutdown releases at once
    assert b.acquire_subnets() == (subnet,)


def test_etcd_restarted_agent_gets_its_previous_subnet(
        etcd_net: Callable[..., EtcdDatastore]) -> None:
    first = etcd_net("n1")
    (subnet,) = first.acquire_subnets()
    others = [etcd_net(f"x{i}") for i in range(5)]
    for other in others:
        other.acquire_subnets()
    # Same node, record still alive (agent restart within the TTL).
    again = etcd_net("n1")
    assert again.acquire_subnets() == (subnet,)
    # Record released (clean shutdown): the owners hint brings the same subnet back.
    again.close()
    third = etcd_net("n1")
    assert third.acquire_subnets() == (subnet,)


def test_etcd_leave_from_a_fresh_process_removes_only_its_own_keys_at_once(
        etcd_server: EtcdServer, etcd_net: Callable[..., EtcdDatastore]) -> None:
    a, c = etcd_net("a", ttl=600), etcd_net("c", ttl=600)
    (a_subnet,) = a.acquire_subnets()
    a.publish({"backend": "vxlan"})
    (c_subnet,) = c.acquire_subnets()
    c.publish({"backend": "vxlan"})
    prefix = a._prefix
    # a stale owners hint of a that names c's subnet must not make a delete c's claim
    etcd_server.put(f"{prefix}/owners/a", json.dumps({"subnets": [str(a_subnet),
                                                                  str(c_subnet)]}))
    watcher = Follower(etcd_net("w", ttl=600))
    try:
        watcher.until(lambda u: {"a", "c"} <= set(u.peers), "a and c as peers")
        # uninstall runs in a new process: no lease, just the node's name
        etcd_net("a", ttl=600).leave()
        update = watcher.until(lambda u: "a" not in u.peers, "a to leave", deadline=5)
        assert "c" in update.peers
    finally:
        watcher.close()
    keys = {k.decode() if isinstance(k, bytes) else k
            for k in etcd_server.get_prefix(prefix + "/")}
    assert not [k for k in keys if k.endswith(("/nodes/a", "/owners/a"))], keys
    claims = etcd_server.get_prefix(f"{prefix}/subnets/")
    assert sorted(v.decode() for v in claims.values()) == ["c"]
    # a's subnet is free at once (long before the 600 s lease), c's is still c's
    b = etcd_net("b", ttl=600, config={"Network": str(a_subnet), "SubnetLen": 24})
    assert b.acquire_subnets() == (a_subnet,)


def test_etcd_watch_sees_peers_and_resumes_after_etcd_restart(etcd_prefix: str) -> None:
    with EtcdServer() as server:
        prefix = etcd_prefix + "net"
        server.put(f"{prefix}/config", json.dumps({"Network": "10.43.0.0/16"}))
        me = EtcdDatastore("me", [server.url], prefix=prefix)
        a = EtcdDatastore("a", [server.url], prefix=prefix)
        b = EtcdDatastore("b", [server.url], prefix=prefix)
        me.acquire_subnets()
        me.publish(VXLAN)
        (a_subnet,) = a.acquire_subnets()
        a.publish({**VXLAN, "underlay": "192.0.2.10"})
        follower = Follower(me)
        try:
            first = follower.until(lambda u: "a" in u.peers, "a in the first list")
            assert first.resync
            assert "me" not in first.peers
            assert first.peers["a"].subnets == (a_subnet,)
            assert first.peers["a"].peer["underlay"] == "192.0.2.10"

            server.restart()
            (b_subnet,) = b.acquire_subnets()
            b.publish({**VXLAN, "underlay": "192.0.2.11"})
            update = follower.until(lambda u: "b" in u.peers, "b after the etcd restart")
            assert update.peers["b"].subnets == (b_subnet,)
            a.publish({**VXLAN, "underlay": "192.0.2.20"})
            follower.until(lambda u: u.peers["a"].peer["underlay"] == "192.0.2.20",
                           "a's new underlay")
            a.close()
            gone = follower.until(lambda u: "a" not in u.peers, "a's record to go")
            assert "a" in gone.changed
            assert set(gone.peers) == {"b"}
        finally:
            follower.close()
            b.close()


def test_etcd_watch_relists_after_compaction(
        etcd_server: EtcdServer, etcd_net: Callable[..., EtcdDatastore]) -> None:
    me, a, b = etcd_net("me"), etcd_net("a"), etcd_net("b")
    for store in (me, a):
        store.acquire_subnets()
        store.publish(VXLAN)
    watch = me.watch()
    first = next(watch)
    assert set(first.peers) == {"a"}
    # While the watcher is between its list and its watch: a leaves, b joins, and etcd
    # compacts the history the watch would resume from.
    a.close()
    b.acquire_subnets()
    b.publish(VXLAN)
    revision = int(etcd_server.request("/v3/kv/range", {"key": "Lw=="})["header"]["revision"])
    etcd_server.request("/v3/kv/compaction", {"revision": revision, "physical": True})
    relisted = next(watch)
    assert relisted.resync
    assert set(relisted.peers) == {"b"}
    assert relisted.changed == {"a", "b"}
    me.close()
    watch.close()


def test_etcd_malformed_record_is_skipped_with_its_node_named(
        etcd_server: EtcdServer, etcd_net: Callable[..., EtcdDatastore]) -> None:
    me, good = etcd_net("me"), etcd_net("good")
    for store in (me, good):
        store.acquire_subnets()
        store.publish(VXLAN)
    prefix = me._prefix
    etcd_server.put(f"{prefix}/nodes/broken", "{not json")
    etcd_server.put(f"{prefix}/nodes/nobackend",
                    json.dumps({"subnets": ["10.40.99.0/24"], "peer": {"vtepMAC": "x"}}))
    first = next(me.watch())
    assert set(first.peers) == {"good"}
    assert "node 'broken'" in first.skipped["broken"]
    assert "not valid JSON" in first.skipped["broken"]
    assert '"backend"' in first.skipped["nobackend"]


def test_etcd_cluster_cidr_too_small_names_the_field(
        etcd_net: Callable[..., EtcdDatastore]) -> None:
    store = etcd_net("n", config={"Network": "10.44.0.0/24", "SubnetLen": 16})
    with pytest.raises(InvalidNetworkConfig, match=r'"SubnetLen".*too small') as info:
        store.acquire_subnets()
    assert info.value.code == 7


def test_etcd_missing_network_config_says_where(
        etcd_server: EtcdServer, etcd_prefix: str) -> None:
    store = EtcdDatastore("n", [etcd_server.url], prefix=etcd_prefix + "empty")
    with pytest.raises(InvalidNetworkConfig, match=r"empty/config is missing"):
        store.acquire_subnets()


def test_etcd_dual_stack_gets_one_subnet_per_family(
        etcd_net: Callable[..., EtcdDatastore]) -> None:
    store = etcd_net("n", config={"Network": "10.45.0.0/16", "IPv6Network": "fd00:45::/48"})
    v4, v6 = store.acquire_subnets()
    assert (v4.version, v4.prefixlen) == (4, 24)
    assert (v6.version, v6.prefixlen) == (6, 64)


# -- kubernetes --------------------------------------------------------------------------------


def _node(name: str, *cidrs: str, peer: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if peer is not None:
        meta["annotations"] = {"pycni.io/peer": peer}
    spec: dict[str, Any] = {}
    if cidrs:
        spec = {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)}
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec}


def _apply_rbac(kube: Any) -> None:
    """deploy/kubernetes/rbac.yaml, applied to the real server."""
    import yaml
    paths = {"ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
             "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
             "ServiceAccount": "/api/v1/namespaces/kube-system/serviceaccounts"}
    rbac = pathlib.Path(__file__).parents[2] / "deploy" / "kubernetes" / "rbac.yaml"
    for doc in yaml.safe_load_all(rbac.read_text()):
        kube.request("POST", paths[doc["kind"]], doc)


@pytest.fixture
def kube() -> Iterator[Any]:
    """A private API server (these tests restart it and rotate tokens), RBAC applied."""
    from pycni.testing import KubeAPIServer
    with EtcdServer() as etcd, KubeAPIServer(etcd.url) as server:
        _apply_rbac(server)
        server.test_etcd = etcd
        yield server


def _in_cluster(kube: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """Service-account files for the agent's identity (bound by rbac.yaml); returns the token
    and the directory."""
    token = kube.add_token("system:serviceaccount:kube-system:pycni",
                           ["system:serviceaccounts"])
    kube.restart()
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes(pathlib.Path(kube.ca_file).read_bytes())
    host, port = kube.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    return token, sa


def test_kubernetes_nodes_seen_published_and_followed_across_restart(
        kube: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni.cluster import KubernetesDatastore
    old_token, sa = _in_cluster(kube, tmp_path, monkeypatch)
    # kube-apiserver 1.20 keeps a second podCIDRs entry only with the IPv6DualStack gate;
    # dual-stack subnets are covered by the etcd test.
    kube.request("POST", "/api/v1/nodes", _node("me", "10.50.1.0/24"))
    kube.request("POST", "/api/v1/nodes", _node("a", "10.50.2.0/24",
                                                 peer=json.dumps({**VXLAN, "underlay": "a"})))
    me = KubernetesDatastore("me", service_account_dir=str(sa), watch_timeout=5)
    try:
        _follow_across_restart(kube, me, sa, old_token)
    finally:
        me.close()


def _follow_across_restart(kube: Any, me: Any, sa: Any, old_token: str) -> None:
    assert me.acquire_subnets() == (ipaddress.ip_network("10.50.1.0/24"),)
    me.publish(VXLAN)
    annotations = kube.request("GET", "/api/v1/nodes/me")["metadata"]["annotations"]
    assert json.loads(annotations["pycni.io/peer"]) == VXLAN

    follower = Follower(me)
    try:
        first = follower.until(lambda u: "a" in u.peers, "node a")
        assert "me" not in first.peers
        assert first.peers["a"].peer["underlay"] == "a"
        # Added, updated, deleted.
        kube.request("POST", "/api/v1/nodes", _node("b", "10.50.3.0/24",
                                                     peer=json.dumps(VXLAN)))
        follower.until(lambda u: "b" in u.peers, "node b added")
        kube.request("PATCH", "/api/v1/nodes/a", {"metadata": {"annotations": {
            "pycni.io/peer": json.dumps({**VXLAN, "underlay": "a2"})}}},
            content_type="application/merge-patch+json")
        follower.until(lambda u: "a" in u.peers and u.peers["a"].peer["underlay"] == "a2",
                       "node a updated")
        kube.request("DELETE", "/api/v1/nodes/b")
        follower.until(lambda u: "b" not in u.peers, "node b deleted")

        # The token rotates (the old one stops working) while the API server restarts, and
        # nodes change meanwhile: the watch resumes or relists (410) and sees all of it.
        new_token = kube.add_token("system:serviceaccount:kube-system:pycni",
                                   ["system:serviceaccounts"])
        kube.remove_token(old_token)
        kube.restart()
        (sa / "token").write_text(new_token)
        kube.request("DELETE", "/api/v1/nodes/a")
        kube.request("POST", "/api/v1/nodes", _node("c", "10.50.4.0/24",
                                                     peer=json.dumps(VXLAN)))
        after = follower.until(lambda u: set(u.peers) == {"c"}, "c only, after the restart")
        assert after.peers["c"].subnets == (ipaddress.ip_network("10.50.4.0/24"),)
        me.publish({**VXLAN, "underlay": "rotated"})
        annotations = kube.request("GET", "/api/v1/nodes/me")["metadata"]["annotations"]
        assert json.loads(annotations["pycni.io/peer"])["underlay"] == "rotated"
    finally:
        follower.close()


def test_kubernetes_bad_nodes_are_named_and_skipped(
        kube: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni.cluster import KubernetesDatastore
    kube.request("POST", "/api/v1/nodes", _node("nocidr"))
    kube.request("POST", "/api/v1/nodes", _node("good", "10.51.1.0/24", peer=json.dumps(VXLAN)))
    kube.request("POST", "/api/v1/nodes", _node("garbled", "10.51.2.0/24", peer="{oops"))
    kube.request("POST", "/api/v1/nodes", _node("orphan", peer=json.dumps(VXLAN)))
    store = KubernetesDatastore("nocidr", kubeconfig=kube.kubeconfig)
    with pytest.raises(InvalidNetworkConfig, match=r"node 'nocidr' has no \"spec\.podCIDR\""):
        store.acquire_subnets()
    first = next(store.watch())
    store.close()
    assert set(first.peers) == {"good"}
    assert "node 'garbled'" in first.skipped["garbled"]
    assert "pycni.io/peer" in first.skipped["garbled"]
    assert "spec.podCIDR" in first.skipped["orphan"]


def test_kubernetes_watch_relists_on_410(kube: Any) -> None:
    from pycni.cluster import KubernetesDatastore
    kube.request("POST", "/api/v1/nodes", _node("a", "10.52.1.0/24", peer=json.dumps(VXLAN)))
    store = KubernetesDatastore("me", kubeconfig=kube.kubeconfig)
    watch = store.watch()
    try:
        assert set(next(watch).peers) == {"a"}
        # Between the list and the watch: a leaves, b joins, etcd's history is compacted
        # and the API server restarts, so the list's resourceVersion is gone (410).
        kube.request("DELETE", "/api/v1/nodes/a")
        kube.request("POST", "/api/v1/nodes", _node("b", "10.52.3.0/24", peer=json.dumps(VXLAN)))
        etcd = kube.test_etcd
        revision = int(etcd.request("/v3/kv/range", {"key": "Lw=="})["header"]["revision"])
        etcd.request("/v3/kv/compaction", {"revision": revision, "physical": True})
        kube.restart()
        relisted = next(watch)
        assert relisted.resync
        assert set(relisted.peers) == {"b"}
        assert relisted.changed == {"a", "b"}
    finally:
        store.close()
        watch.close()
