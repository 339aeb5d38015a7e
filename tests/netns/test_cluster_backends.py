"""Cluster backends against the kernel: three "nodes" on one underlay segment.

Each node is a namespace with a veth on a bridge that lives in a fourth namespace (the
segment, 192.168.77.0/24); behind each node a pod namespace sits on a bridge in the node's
pod subnet (10.244.N.0/24). The backends run in the node namespaces with peers built by
hand (no datastore), and the pods ping each other across the nodes.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycni import host
from pycni.cluster import NodeRecord
from pycni.cluster.backends import Backend, LocalNode, ReconcileReport, load_backend
from pycni.testing import ns_run, temp_netns, unique_name

pytestmark = pytest.mark.netns

SEGMENT = ipaddress.ip_network("192.168.77.0/24")


def _ip(netns: str, *args: str) -> None:
    ns_run(netns, "ip", *args, check=True)


@dataclass
class Node:
    """One simulated node: its namespace, its pod's, and the backend running in it."""

    name: str
    ns: str
    pod_ns: str
    underlay: str
    underlay_address: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network
    backend: Backend | None = None
    peer: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def pod_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return host.run_in_netns(self.ns, fn, *args)

    def setup(self, options: dict[str, Any]) -> None:
        self.options = options
        self.backend = load_backend(options)
        local = LocalNode(self.name, (self.subnet,), self.underlay_address, self.underlay)
        self.peer = dict(self.call(self.backend.setup, local))

    def record(self) -> NodeRecord:
        return NodeRecord(self.name, (self.subnet,), self.peer)

    def reconcile(self, peers: dict[str, NodeRecord]) -> ReconcileReport:
        assert self.backend is not None
        report: ReconcileReport = self.call(self.backend.reconcile, peers)
        return report

    def state(self) -> dict[str, Any]:
        """Routes, neighbours and FDB entries as ``ip``/``bridge`` list them."""
        out = {}
        for what, argv in (("routes", ("ip", "-j", "-d", "route", "show")),
                           ("neigh", ("ip", "-j", "neigh", "show", "nud", "permanent")),
                           ("fdb", ("bridge", "-j", "fdb", "show"))):
            text = ns_run(self.ns, *argv, check=True).stdout
            out[what] = sorted(json.dumps(e, sort_keys=True) for e in json.loads(text or "[]"))
        return out


def _attach(seg: str, seg_bridge: str, node: Node, address: str) -> None:
    port = unique_name("p")
    _ip(seg, "link", "add", port, "type", "veth", "peer", "name", node.underlay, "netns",
        Path(node.ns).name)
    _ip(seg, "link", "set", port, "master", seg_bridge, "up")
    _ip(node.ns, "addr", "add", address, "dev", node.underlay)
    _ip(node.ns, "link", "set", node.underlay, "up")


def _make_pod(node: Node) -> None:
    bridge, outside, inside = unique_name("br"), unique_name("v"), unique_name("e")
    gw = node.subnet.network_address + 1
    _ip(node.ns, "link", "add", bridge, "type", "bridge")
    _ip(node.ns, "addr", "add", f"{gw}/{node.subnet.prefixlen}", "dev", bridge)
    _ip(node.ns, "link", "set", bridge, "up")
    _ip(node.ns, "link", "add", outside, "type", "veth", "peer", "name", inside, "netns",
        Path(node.pod_ns).name)
    _ip(node.ns, "link", "set", outside, "master", bridge, "up")
    _ip(node.pod_ns, "addr", "add", f"{node.pod_ip}/{node.subnet.prefixlen}", "dev", inside)
    _ip(node.pod_ns, "link", "set", inside, "up")
    _ip(node.pod_ns, "link", "set", "lo", "up")
    _ip(node.pod_ns, "route", "add", "default", "via", str(gw))
    ns_run(node.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)


@pytest.fixture
def cluster() -> Iterator[list[Node]]:
    """Three nodes on one segment, each with one pod; backends not set up yet."""
    with ExitStack() as stack:
        seg = stack.enter_context(temp_netns("seg"))
        seg_bridge = unique_name("sb")
        _ip(seg, "link", "add", seg_bridge, "type", "bridge")
        _ip(seg, "link", "set", seg_bridge, "up")
        nodes = []
        for i in (1, 2, 3):
            node = Node(name=f"node-{i}", ns=stack.enter_context(temp_netns("n")),
                        pod_ns=stack.enter_context(temp_netns("pod")), underlay=unique_name("u"),
                        underlay_address=SEGMENT.network_address + 10 + i,
                        subnet=ipaddress.ip_network(f"10.244.{i}.0/24"))
            _attach(seg, seg_bridge, node, f"{node.underlay_address}/24")
            _make_pod(node)
            nodes.append(node)
        yield nodes


def _peers(nodes: list[Node], me: Node) -> dict[str, NodeRecord]:
    return {n.name: n.record() for n in nodes if n is not me}


def _ping(src: Node, dst: Node) -> bool:
    return ns_run(src.pod_ns, "ping", "-c1", "-W2", dst.pod_ip).returncode == 0


def _all_ping(nodes: list[Node]) -> list[tuple[str, str]]:
    """The pairs that cannot ping each other (empty: all can)."""
    return [(a.name, b.name) for a in nodes for b in nodes if a is not b and not _ping(a, b)]


def _options(kind: str) -> dict[str, Any]:
    return {"type": "vxlan", "device": unique_name("vx")} if kind == "vxlan" \
        else {"type": "host-gw"}


@pytest.mark.parametrize("kind", ["vxlan", "host-gw"])
def test_pods_reach_each_other_across_nodes(cluster: list[Node], kind: str) -> None:
    for node in cluster:
        node.setup(_options(kind))
    assert not _ping(cluster[0], cluster[1])  # nothing routes between the nodes yet
    for node in cluster:
        report = node.reconcile(_peers(cluster, node))
        assert not report.errors, report
        assert not report.skipped, report
        assert report.changes > 0
    assert _all_ping(cluster) == []
    if kind == "vxlan":
        _check_vxlan_device(cluster[0])
    # A second reconcile finds everything right: nothing changes, in the report or kernel.
    before = [n.state() for n in cluster]
    for node in cluster:
        report = node.reconcile(_peers(cluster, node))
        assert report.changes == 0, report
        # An agent restart: a new backend from the same options, set up and reconciled.
        node.setup(node.options)
        assert node.reconcile(_peers(cluster, node)).changes == 0
    assert [n.state() for n in cluster] == before


def _check_vxlan_device(node: Node) -> None:
    """flannel's layout: VNI 1, port 8472, learning off, MTU underlay - 50, VTEP address."""
    assert node.backend is not None
    dev = node.options["device"]
    (link,) = json.loads(ns_run(node.ns, "ip", "-d", "-j", "addr", "show", "dev", dev,
                                check=True).stdout)
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["learning"], info["local"]) == (
        1, 8472, False, str(node.underlay_address))
    assert link["mtu"] == 1450
    assert link["address"] == node.peer["vtepMAC"]
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"]
            if a["family"] == "inet"] == [("10.244.1.0", 32)]
    routes = ns_run(node.ns, "ip", "route", "show", "dev", dev, check=True).stdout
    assert "10.244.2.0/24 via 10.244.2.0 proto 112 onlink" in routes
    neigh = ns_run(node.ns, "ip", "neigh", "show", "dev", dev, check=True).stdout
    assert "10.244.2.0 lladdr" in neigh
    assert "PERMANENT" in neigh
    fdb = ns_run(node.ns, "bridge", "fdb", "show", "dev", dev, check=True).stdout
    assert "dst 192.168.77.12 self permanent" in fdb


def _up(cluster: list[Node], kind: str) -> None:
    for node in cluster:
        node.setup(_options(kind))
    for node in cluster:
        report = node.reconcile(_peers(cluster, node))
        assert not report.errors, report
        assert not report.skipped, report


def _mentions(node: Node, *needles: str) -> list[str]:
    """The routes/neighbour/FDB entries of ``node`` that mention any of ``needles``."""
    return [entry for entries in node.state().values() for entry in entries
            if any(f'"{n}' in entry for n in needles)]


@pytest.mark.parametrize("kind", ["vxlan", "host-gw"])
def test_a_node_that_leaves_is_removed_and_one_that_comes_back_is_fixed(
        cluster: list[Node], kind: str) -> None:
    _up(cluster, kind)
    one, two, three = cluster
    gone = (str(three.subnet.network_address), str(three.underlay_address))
    assert _mentions(one, *gone)
    # node-3 leaves: the others drop its route, neighbour and FDB entries (flannel#2554).
    for node in (one, two):
        report = node.reconcile(_peers([one, two], node))
        assert report.removed, report
        assert not report.added, report
        assert not _mentions(node, *gone)
    assert _all_ping([one, two]) == []
    # node-3 comes back with another underlay address (kind#2941).
    _ip(three.ns, "addr", "flush", "dev", three.underlay)
    three.underlay_address = SEGMENT.network_address + 23
    _ip(three.ns, "addr", "add", f"{three.underlay_address}/24", "dev", three.underlay)
    three.setup(three.options)
    for node in cluster:
        report = node.reconcile(_peers(cluster, node))
        assert not report.errors, report
    assert _all_ping(cluster) == []
    assert not _mentions(one, "192.168.77.13")
    # ... and it comes back at the old address again: entries are replaced, not duplicated.
    _ip(three.ns, "addr", "flush", "dev", three.underlay)
    three.underlay_address = SEGMENT.network_address + 13
    _ip(three.ns, "addr", "add", f"{three.underlay_address}/24", "dev", three.underlay)
    three.setup(three.options)
    for node in cluster:
        node.reconcile(_peers(cluster, node))
    report = one.reconcile(_peers(cluster, one))
    assert report.changes == 0, report
    assert not _mentions(one, "192.168.77.23")
    assert _all_ping(cluster) == []


@pytest.mark.parametrize("kind", ["vxlan", "host-gw"])
def test_teardown_leaves_only_what_the_backend_did_not_make(
        cluster: list[Node], kind: str) -> None:
    one = cluster[0]
    # Someone else's routes: a static one via the segment and one of a routing daemon.
    _ip(one.ns, "route", "add", "10.50.0.0/24", "via", "192.168.77.1")
    _ip(one.ns, "route", "add", "10.51.0.0/24", "via", "192.168.77.1", "proto", "bird")
    _up(cluster, kind)
    foreign = _mentions(one, "10.50.0.0", "10.51.0.0")
    assert len(foreign) == 2
    before = one.state()
    one.reconcile({})  # every peer left: only the backend's entries go
    assert _mentions(one, "10.50.0.0", "10.51.0.0") == foreign
    assert not _mentions(one, "10.244.2.0", "10.244.3.0")
    for node in cluster:
        assert node.backend is not None
        node.call(node.backend.teardown)
        assert not ns_run(node.ns, "ip", "route", "show", "proto", "112").stdout.strip()
        links = [link.name for link in node.call(host.list_links)]
        assert not [name for name in links if name.startswith("pytvx")]
    assert _mentions(one, "10.50.0.0", "10.51.0.0") == foreign
    assert before != one.state()
    assert not _ping(cluster[0], cluster[1])


@pytest.mark.parametrize("kind", ["vxlan", "host-gw"])
def test_bad_peer_data_is_skipped_and_named(cluster: list[Node], kind: str) -> None:
    _up(cluster, kind)
    one = cluster[0]
    peers = _peers(cluster, one)
    good = dict(cluster[1].peer)
    bad = {
        "other-backend": NodeRecord("other-backend", (ipaddress.ip_network("10.244.9.0/24"),),
                                    {**good, "backend": "udp"}),
        "bad-underlay": NodeRecord("bad-underlay", (ipaddress.ip_network("10.244.10.0/24"),),
                                   {**good, "underlay": "not-an-ip"}),
        "v6-underlay": NodeRecord("v6-underlay", (ipaddress.ip_network("10.244.11.0/24"),),
                                  {**good, "underlay": "fd00::1"}),
        "overlap": NodeRecord("overlap", (ipaddress.ip_network("10.244.1.128/25"),), good),
    }
    if kind == "vxlan":
        bad["bad-mac"] = NodeRecord("bad-mac", (ipaddress.ip_network("10.244.12.0/24"),),
                                    {**good, "vtepMAC": "zz:00:00:00:00:01"})
        bad["other-vni"] = NodeRecord("other-vni", (ipaddress.ip_network("10.244.13.0/24"),),
                                      {**good, "vni": 7})
    report = one.reconcile({**peers, **bad})
    assert set(report.skipped) == set(bad), report
    assert "udp" in report.skipped["other-backend"]
    assert "not-an-ip" in report.skipped["bad-underlay"]
    assert "10.244.1.0/24" in report.skipped["overlap"]
    assert report.changes == 0, report  # the good peers were right already
    assert not _mentions(one, "10.244.9.", "10.244.10.", "10.244.11.", "10.244.12.")
    assert _all_ping(cluster) == []


def test_host_gw_names_a_peer_that_is_not_on_link(cluster: list[Node]) -> None:
    _up(cluster, "host-gw")
    one = cluster[0]
    far = NodeRecord("far-away", (ipaddress.ip_network("10.244.20.0/24"),),
                     {"backend": "host-gw", "underlay": "10.9.9.9"})
    report = one.reconcile({**_peers(cluster, one), "far-away": far})
    assert set(report.errors) == {"far-away"}, report
    assert "10.9.9.9 is not on-link" in report.errors["far-away"]
    assert report.changes == 0, report
    assert _all_ping(cluster) == []
