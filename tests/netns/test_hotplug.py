"""Hot-plug against a real kube-apiserver: the agent's pod watch adds and removes a running
pod's attachments when its networks annotation changes (delegates in test namespaces)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_multus import (  # the same node, NADs and API seam as the meta plugin's tests
    Node,
    RootNetnsSource,
    _api_from_the_root_namespace,  # noqa: F401 - autouse fixture
    _assert_nothing_left,
    addresses,
    links,
    make_nad,
    make_pod,
    ptp_conf,
    read_status,
)

from pycni.host import run_in_netns
from pycni.multi import (
    NETWORKS_ANNOTATION,
    DefaultNetworkRemoval,
    HotPlug,
    MultusConfig,
    NetworkSelection,
    PodRecords,
    RecordGoneError,
    add_attachment,
    remove_attachment,
    use_watch_cache,
)
from pycni.testing import KubeAPIServer, unique_name

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

DEADLINE = 30.0


@pytest.fixture
def node(host_ns: str, tmp_path: Path, kube_apiserver: KubeAPIServer) -> Node:
    """test_multus's node, with its own bridge and subnet."""
    (tmp_path / "bin").mkdir()  # empty: every delegate is a pycni type, run in-process
    (tmp_path / "net.d").mkdir()
    return Node(host_ns, tmp_path, kube_apiserver, unique_name("br"), "10.239.0.0/24", {})


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def annotate(node: Node, pod: dict[str, Any], networks: str) -> None:
    meta = pod["metadata"]
    node.api.request("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                     {"metadata": {"annotations": {NETWORKS_ANNOTATION: networks}}})


def multus_conf(node: Node) -> MultusConfig:
    return MultusConfig.parse(node.conf())


@pytest.fixture
def agent(node: Node) -> Iterator[Callable[[], HotPlug]]:
    """Start the agent's hot-plug side (as many times as a test wants; all stopped)."""
    started: list[HotPlug] = []

    def start() -> HotPlug:
        hot = HotPlug(multus_conf(node), "node-1", kubeconfig=node.api.kubeconfig,
                      source=RootNetnsSource(node.api.kubeconfig), host_netns=node.host_ns,
                      resync=1.0, cni_path=[str(node.tmp / "bin")])
        hot.start()
        started.append(hot)
        return hot

    yield start
    for hot in started:
        hot.stop()


def side_leases(node: Node) -> list[str]:
    return [lease for lease in node.leases() if lease.startswith("side/")]


def has_side(netns: str, interface: str = "net1") -> bool:
    link = links(netns).get(interface)
    return link is not None and any(a.startswith("10.232.0.") for a in addresses(link))


def setup_pod(node: Node, netns: str, ns: str) -> tuple[dict[str, Any], str]:
    """A NAD "side" (ptp + host-local) and a running pod that started without it."""
    make_nad(node.api, ns, "side", ptp_conf(node, "side"))
    pod = make_pod(node.api, ns, {})
    cid = unique_name("cid")
    node.call("ADD", pod, netns, cid).ok()
    assert set(links(netns)) == {"lo", "eth0"}
    return pod, cid


def test_hotplug_add_and_remove_and_later_del(node: Node, netns: str, kube_namespace: str,
                                              agent: Callable[[], HotPlug]) -> None:
    pod, cid = setup_pod(node, netns, kube_namespace)
    agent()
    annotate(node, pod, "side")
    wait_for("net1 with its address", lambda: has_side(netns))
    wait_for("network-status with net1", lambda: len(read_status(node.api, pod)) == 2)
    status = read_status(node.api, pod)
    assert [(s["name"], s["interface"], s["default"]) for s in status] == [
        ("podnet", "eth0", True), (f"{kube_namespace}/side", "net1", False)]
    assert status[1]["ips"] == addresses(links(netns)["net1"])
    assert len(side_leases(node)) == 1

    annotate(node, pod, "")
    wait_for("net1 removed", lambda: "net1" not in links(netns))
    wait_for("network-status without net1", lambda: len(read_status(node.api, pod)) == 1)
    assert side_leases(node) == []
    assert "eth0" in links(netns)

    # added again, then the pod is deleted: its DEL (from the record) tears net1 down too
    annotate(node, pod, "side")
    wait_for("net1 again", lambda: has_side(netns))
    node.call("DEL", pod, netns, cid).ok()
    _assert_nothing_left(node, netns)


def test_agent_restart_converges(node: Node, netns: str, kube_namespace: str,
                                 agent: Callable[[], HotPlug]) -> None:
    pod, cid = setup_pod(node, netns, kube_namespace)
    make_nad(node.api, kube_namespace, "other", ptp_conf(node, "other") | {
        "plugins": [{"type": "ptp", "ipam": {"type": "host-local", "subnet": "10.238.0.0/24",
                                             "dataDir": str(node.ipam_dir)}}]})
    first = agent()
    annotate(node, pod, "side")
    wait_for("net1", lambda: has_side(netns))
    first.stop()
    annotate(node, pod, "other@data0")  # while no agent runs
    agent()
    wait_for("data0 added and net1 removed",
             lambda: "data0" in links(netns) and "net1" not in links(netns))
    assert side_leases(node) == []
    wait_for("network-status", lambda: [s["interface"] for s in read_status(node.api, pod)]
             == ["eth0", "data0"])
    node.call("DEL", pod, netns, cid).ok()
    _assert_nothing_left(node, netns)


def test_cluster_network_is_not_replaced(node: Node, netns: str, kube_namespace: str,
                                         agent: Callable[[], HotPlug]) -> None:
    pod, cid = setup_pod(node, netns, kube_namespace)
    eth0 = addresses(links(netns)["eth0"])
    hot = agent()
    annotate(node, pod, "side@eth0")

    def refused() -> bool:
        events = node.api.request("GET", f"/api/v1/namespaces/{kube_namespace}/events")
        return any(e["involvedObject"].get("name") == pod["metadata"]["name"]
                   and e["reason"] == "ClusterNetworkChange" for e in events["items"])

    wait_for("an Event naming the pod", refused)
    assert addresses(links(netns)["eth0"]) == eth0
    assert side_leases(node) == []
    # the library refuses it too
    record = PodRecords(str(node.cni_dir)).find(kube_namespace, pod["metadata"]["name"])[0]
    with pytest.raises(DefaultNetworkRemoval, match="cluster network"):
        remove_attachment(hot.conf, record, "eth0")
    node.call("DEL", pod, netns, cid).ok()
    _assert_nothing_left(node, netns)


def test_del_racing_a_hotplug_add_leaks_nothing(node: Node, netns: str,
                                                kube_namespace: str) -> None:
    pod, cid = setup_pod(node, netns, kube_namespace)
    conf = multus_conf(node)
    records = PodRecords(conf.cni_dir)
    record = records.load(cid, "eth0")
    assert record is not None
    source = RootNetnsSource(node.api.kubeconfig)
    outcome: list[object] = []

    def hotplug() -> None:
        try:
            outcome.append(run_in_netns(
                node.host_ns, add_attachment, conf, record,
                NetworkSelection("side", kube_namespace), source=source,
                cni_path=[str(node.tmp / "bin")]))
        except RecordGoneError as exc:
            outcome.append(exc)

    # The test holds the record's lock: both wait for it, then run one after the other.
    with records.lock(cid, "eth0"):
        adder = threading.Thread(target=hotplug)
        adder.start()
        deleter = threading.Thread(target=lambda: outcome.append(
            node.call("DEL", pod, netns, cid).ok()))
        deleter.start()
        time.sleep(0.2)
    adder.join()
    deleter.join()
    source.close()
    # whichever ran first, the pod is gone with everything it had (a hot-plug after the
    # DEL found no record and did nothing)
    assert len(outcome) == 2
    if any(isinstance(o, RecordGoneError) for o in outcome):
        assert "net1" not in links(netns)
    _assert_nothing_left(node, netns)


def test_add_attachment_api(node: Node, netns: str, kube_namespace: str) -> None:
    """The per-attachment operations migrate builds on: add, idempotent re-add, remove."""
    pod, cid = setup_pod(node, netns, kube_namespace)
    conf = multus_conf(node)
    source = RootNetnsSource(node.api.kubeconfig)
    record = PodRecords(conf.cni_dir).load(cid, "eth0")
    assert record is not None
    sel = NetworkSelection("side", kube_namespace, interface="side0")
    path = [str(node.tmp / "bin")]
    record = run_in_netns(node.host_ns, add_attachment, conf, record, sel, source=source,
                          cni_path=path)
    assert [(a.interface, a.state) for a in record.attachments] == [
        ("eth0", "added"), ("side0", "added")]
    assert has_side(netns, "side0")
    again = run_in_netns(node.host_ns, add_attachment, conf, record, sel, source=source,
                         cni_path=path)
    assert len(again.attachments) == 2
    assert [s["interface"] for s in read_status(node.api, pod)] == ["eth0", "side0"]
    on_disk = json.loads((node.cni_dir / "pods" / f"{cid}_eth0.json").read_text())
    assert [a["interface"] for a in on_disk["attachments"]] == ["eth0", "side0"]
    left = run_in_netns(node.host_ns, remove_attachment, conf, record, "side0", source=source,
                        cni_path=path)
    assert left is not None
    assert [a.interface for a in left.attachments] == ["eth0"]
    assert side_leases(node) == []
    source.close()
    node.call("DEL", pod, netns, cid).ok()
    _assert_nothing_left(node, netns)


def test_multus_in_the_agent_reads_the_watch_cache(node: Node, netns: str, kube_namespace: str,
                                                   agent: Callable[[], HotPlug]) -> None:
    make_nad(node.api, kube_namespace, "side", ptp_conf(node, "side"))
    pod = make_pod(node.api, kube_namespace, {NETWORKS_ANNOTATION: "side"})
    hot = agent()
    name = pod["metadata"]["name"]
    wait_for("the pod and the NAD in the caches",
             lambda: hot.pods.get(kube_namespace, name) is not None
             and hot.nads.get(kube_namespace, "side") is not None)
    use_watch_cache(hot)
    try:
        cid = unique_name("cid")
        node.call("ADD", pod, netns, cid).ok()
        assert has_side(netns)
        assert hot.cache.hits >= 2
        assert hot.cache.misses == 0
        # a pod the cache does not hold (another node's): one GET
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": unique_name("pod")},
                "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "pause"}]}}
        other = node.api.request("POST", f"/api/v1/namespaces/{kube_namespace}/pods", body)
        found = hot.cache.pod(kube_namespace, other["metadata"]["name"])
        assert found.uid == other["metadata"]["uid"]
        assert hot.cache.misses == 1
        node.call("DEL", pod, netns, cid).ok()
    finally:
        use_watch_cache(None)
    _assert_nothing_left(node, netns)
