"""A real multi-node pycni cluster in namespaces (``pycni lab``): agents, datastores, backends.

Each lab is 3 node namespaces on an underlay segment namespace, a real ``pycni agent
--cluster-config`` per node, and pods attached by ``pycni add`` with the node's written CNI
config. Every namespace name starts with a :func:`unique_name`; the lab is removed in a
finalizer, also when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.host import netns_path, run_in_netns
from pycni.testing import Lab, LabOptions, ip_json, unique_name, wait_for
from pycni.testing._lab import pycni_argv

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.netns]

MakeLab = Callable[..., Lab]


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[MakeLab]:
    labs: list[Lab] = []

    def make(**options: Any) -> Lab:
        opts = LabOptions(prefix=unique_name("lab"), directory=str(tmp_path / f"lab{len(labs)}"),
                          **{"pods_per_node": 1, **options})
        lab = Lab(opts.directory)
        labs.append(lab)
        built = Lab.up(opts)
        labs[-1] = built
        return built

    yield make
    for lab in labs:
        lab.down()


def _all_reach(lab: Lab) -> dict[str, list[str]]:
    """For each pod, the pods it could not ping."""
    reach = lab.reachability()
    return {pod: [q for q, ok in answers.items() if not ok] for pod, answers in reach.items()
            if not all(answers.values())}


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
@pytest.mark.parametrize("datastore", ["etcd", "kubernetes"])
def test_every_pod_reaches_every_other_pod(make_lab: MakeLab, datastore: str,
                                           backend: str) -> None:
    lab = make_lab(nodes=3, pods_per_node=2, datastore=datastore, backend=backend)
    summary = lab.summary()
    subnets = [n["subnets"][0] for n in summary["nodes"]]
    assert len(set(subnets)) == 3
    for node in summary["nodes"]:
        assert node["phase"] == "ready"
        assert len(node["peers"]) == 2
    for pod in summary["pods"]:
        node = next(n for n in summary["nodes"] if n["name"] == pod["node"])
        assert pod["ips"][0].rsplit(".", 1)[0] == node["subnets"][0].rsplit(".", 1)[0]
    assert _all_reach(lab) == {}
    # the node's CNI config is the built-in one, on the node's subnet, with the device's MTU
    conf = json.loads(lab.conflist(summary["nodes"][0]["name"]).read_text())
    bridge = conf["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": subnets[0]}]]
    assert bridge["mtu"] == (1450 if backend == "vxlan" else 1500)
    # pod traffic leaving the cluster is masqueraded in pycni's own table only
    node_ns = netns_path(summary["nodes"][0]["netns"])
    out = run_in_netns(node_ns, subprocess.run, ["nft", "list", "tables"],
                       capture_output=True, text=True, check=True).stdout
    assert "table ip pycni-cluster" in out


def _peer_state(lab: Lab, node: str, subnet: str, mac: str | None = None) -> dict[str, Any]:
    """What ``node``'s kernel holds for the peer with ``subnet`` (and VTEP ``mac``): routes,
    neighbours, FDB entries (every remote one without ``mac``)."""
    ns = lab.node(node)["netns"]
    gateway = subnet.split("/", maxsplit=1)[0]
    routes = [r for r in ip_json(netns_path(ns), "route", "show") if r.get("dst") == subnet]
    links = {link["ifname"] for link in ip_json(netns_path(ns), "link", "show")}
    neigh = fdb = []
    if "pycni.1" in links:
        neigh = [n for n in ip_json(netns_path(ns), "neigh", "show", "dev", "pycni.1")
                 if n.get("dst") == gateway]
        out = run_in_netns(netns_path(ns), subprocess.run,
                           ["bridge", "-j", "fdb", "show", "dev", "pycni.1"],
                           capture_output=True, text=True, check=True).stdout
        fdb = [f for f in json.loads(out or "[]") if f.get("mac") != "00:00:00:00:00:00"
               and (mac is None or f.get("mac") == mac)]
    return {"routes": routes, "neigh": neigh, "fdb": fdb}


#: Seconds within which the other nodes must drop a node that left: far below the lab's
#: lease TTL in these tests, so a removal never waits for a lease to expire.
LEAVE_WITHIN = 10
LONG_TTL = 600


@pytest.mark.parametrize(("datastore", "backend", "how"), [
    ("etcd", "vxlan", "uninstall"),
    ("etcd", "vxlan", "remove-config-on-exit"),
    ("kubernetes", "host-gw", "uninstall"),
])
def test_node_that_leaves_is_removed_from_the_others(make_lab: MakeLab, datastore: str,
                                                     backend: str, how: str) -> None:
    lab = make_lab(nodes=3, pods_per_node=0, datastore=datastore, backend=backend,
                   lease_ttl=LONG_TTL)
    n1, n2, n3 = (n["name"] for n in lab.nodes)
    subnet = lab.node_status(n3)["subnets"][0]
    before = _peer_state(lab, n1, subnet)
    assert before["routes"]
    mac = None
    if backend == "vxlan":
        assert before["neigh"]
        assert len(before["fdb"]) == 2  # n2's and n3's
        mac = before["neigh"][0]["lladdr"]
        assert len(_peer_state(lab, n1, subnet, mac)["fdb"]) == 1
    if how == "uninstall":
        # `pycni cluster uninstall` in a process of its own, after the agent stopped: it
        # never held the agent's lease
        lab.leave(n3)
    else:
        # the running agent leaves on SIGTERM
        lab.stop_agent(n3)
        lab.start_agent(n3, "--remove-config-on-exit")
        lab.wait_ready(60)
        lab.stop_agent(n3)
    # uninstalled: the CNI config first, then the masquerade table and the backend's objects
    assert not lab.conflist(n3).exists()
    assert "pycni.1" not in {link["ifname"] for link in ip_json(netns_path(n3), "link", "show")}
    for node in (n1, n2):
        assert wait_for(lambda node=node: _peer_state(lab, node, subnet, mac)
                        == {"routes": [], "neigh": [], "fdb": []}, timeout=LEAVE_WITHIN)
        assert wait_for(lambda node=node: n3 not in lab.node_status(node)["peers"],
                        timeout=LEAVE_WITHIN)
    # the others still reach each other
    assert lab.node_status(n1)["phase"] == "ready"


def test_down_removes_everything_after_agents_were_killed(make_lab: MakeLab) -> None:
    lab = make_lab(nodes=2, pods_per_node=1, datastore="etcd", backend="vxlan")
    prefix = lab.state["prefix"]
    pids = [n["pid"] for n in lab.nodes]
    run_dir = Path(lab.state["runDir"])
    etcd_dir = Path(lab.state["servers"]["etcd"]["dir"])
    # a crash: the agents die without a chance to clean up (the lab still lists them)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    removed = lab.down()
    assert len([r for r in removed if r.startswith("netns ")]) == 2 + 2 + 1  # nodes, pods, ul
    assert not [p for p in Path("/run/netns").iterdir() if p.name.startswith(prefix)]
    assert not run_dir.exists()
    assert not etcd_dir.exists()
    assert not lab.dir.exists()
    for pid in pids:
        assert wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists()
                        or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
                        timeout=10)
    assert lab.down() == []  # a second down (the fixture's finalizer) finds nothing


def _ping_counts(output: str) -> tuple[int, int]:
    match = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert match, output
    return int(match.group(1)), int(match.group(2))


def _pod_link(lab: Lab, pod: str) -> list[tuple[int, str, str]]:
    return [(link["ifindex"], link["ifname"], link.get("address", ""))
            for link in ip_json(netns_path(pod), "link", "show")]


def test_agent_restart_and_sigkill_under_ping_lose_nothing(make_lab: MakeLab) -> None:
    lab = make_lab(nodes=3, pods_per_node=1, datastore="etcd", backend="vxlan")
    n1, n2, _ = (n["name"] for n in lab.nodes)
    p1, p2 = (next(p for p in lab.pods if p["node"] == n) for n in (n1, n2))
    links = {p["name"]: _pod_link(lab, p["name"]) for p in (p1, p2)}
    confs = {n: lab.conflist(n).stat().st_mtime_ns for n in (n1, n2)}
    ping = run_in_netns(netns_path(p1["name"]), subprocess.Popen,
                        ["ping", "-n", "-i", "0.02", p2["ips"][0]],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)  # some traffic before the first restart (not a timing assertion)
        lab.stop_agent(n1, signal.SIGTERM)
        lab.start_agent(n1)
        lab.stop_agent(n2, signal.SIGKILL)
        lab.start_agent(n2)
        lab.wait_ready(60)
        # both agents reconciled again after their restart
        for node in (n1, n2):
            assert wait_for(lambda node=node: lab.node_status(node).get("reconciles", 0) >= 2,
                            timeout=20)
    finally:
        ping.send_signal(signal.SIGINT)
        output, _ = ping.communicate(timeout=10)
    sent, received = _ping_counts(output)
    assert sent > 50
    assert received == sent, output
    # no live pod was touched: same links, same config file
    assert {p["name"]: _pod_link(lab, p["name"]) for p in (p1, p2)} == links
    assert {n: lab.conflist(n).stat().st_mtime_ns for n in (n1, n2)} == confs


def _run_agent_until(lab: Lab, node: str, config: dict[str, Any],
                     predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Start ``node``'s agent with ``config``; the status once ``predicate`` holds."""
    path = Path(lab.node(node)["dir"]) / "cluster.json"
    path.write_text(json.dumps(config))
    (Path(lab.node(node)["dir"]) / "status.json").unlink(missing_ok=True)
    lab.start_agent(node)
    return wait_for(lambda: (s := lab.node_status(node)) and predicate(s) and s, timeout=30)


def test_node_without_pod_cidr_gets_no_config_until_it_has_one(make_lab: MakeLab) -> None:
    lab = make_lab(nodes=2, pods_per_node=0, datastore="kubernetes", backend="vxlan")
    n1, n2 = (n["name"] for n in lab.nodes)
    config = json.loads((Path(lab.node(n2)["dir"]) / "cluster.json").read_text())
    lab.leave(n2)
    underlay = netns_path(lab.state["underlay"]["netns"])
    api = lab.state["servers"]["apiserver"]

    def kube(method: str, path: str, body: Any = None) -> Any:
        import ssl
        import urllib.request

        req = urllib.request.Request(api["url"] + path, method=method,  # noqa: S310
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {api['token']}",
                                              "Content-Type": "application/json"})
        ctx = ssl.create_default_context(cafile=api["ca"])
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:  # noqa: S310
            return json.load(resp)

    run_in_netns(underlay, kube, "POST", "/api/v1/nodes",
                 {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n2}})
    status = _run_agent_until(lab, n2, config, lambda s: bool(s.get("last_error")))
    assert "spec.podCIDR" in status["last_error"]
    assert status["phase"] == "error"
    # nothing half-configured: no CNI config, no VXLAN device
    assert not lab.conflist(n2).exists()
    assert "pycni.1" not in {link["ifname"] for link in ip_json(netns_path(n2), "link", "show")}
    # the controller-manager assigns a subnet: the node comes up by itself
    run_in_netns(underlay, kube, "DELETE", f"/api/v1/nodes/{n2}")
    run_in_netns(underlay, kube, "POST", "/api/v1/nodes",
                 {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n2},
                  "spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}})
    assert wait_for(lambda: lab.conflist(n2).exists(), timeout=30)
    assert lab.node_status(n2)["subnets"] == ["10.244.9.0/24"]
    assert wait_for(lambda: n2 in lab.node_status(n1)["peers"], timeout=20)


def test_cluster_cidr_too_small_and_malformed_peer(make_lab: MakeLab) -> None:
    lab = make_lab(nodes=2, pods_per_node=1, datastore="etcd", backend="vxlan")
    n1, n2 = (n["name"] for n in lab.nodes)
    underlay = netns_path(lab.state["underlay"]["netns"])
    etcd_url = lab.state["servers"]["etcd"]["url"]

    def put(key: str, value: str) -> None:
        import base64
        import urllib.request

        body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                           "value": base64.b64encode(value.encode()).decode()}).encode()
        req = urllib.request.Request(etcd_url + "/v3/kv/put", data=body)  # noqa: S310
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass

    # a malformed peer record: the agents name it and keep the others working
    run_in_netns(underlay, put, "/pycni/network/nodes/bogus",
                 json.dumps({"subnets": ["10.244.250.0/24"],
                             "peer": {"backend": "vxlan", "underlay": "10.99.0.77",
                                      "vtepMAC": "zz"}}))
    status = wait_for(lambda: lab.node_status(n1).get("skipped", {}).get("bogus"), timeout=20)
    assert "vtepMAC" in status
    assert _all_reach(lab) == {}
    # a cluster CIDR too small for its subnet length: an error naming the field, no config
    run_in_netns(underlay, put, "/pycni/small/config",
                 json.dumps({"Network": "10.245.0.0/24", "SubnetLen": 16}))
    config = json.loads((Path(lab.node(n2)["dir"]) / "cluster.json").read_text())
    lab.leave(n2)
    config.update(etcdPrefix="/pycni/small")
    config.pop("clusterCIDR")
    status = _run_agent_until(lab, n2, config, lambda s: bool(s.get("last_error")))
    assert "SubnetLen" in status["last_error"]
    assert not lab.conflist(n2).exists()
    assert "pycni.1" not in {link["ifname"] for link in ip_json(netns_path(n2), "link", "show")}


@pytest.mark.parametrize(("change", "field"), [
    ({"backend": {"type": "bogus"}}, '"backend.type"'),
    ({"backend": {"type": "host-gw", "vni": 2}}, '"backend.vni"'),
    ({"clusterCIDR": "10.244.0.0/33"}, '"clusterCIDR"'),
    ({"nodeName": ""}, '"nodeName"'),
])
def test_bad_cluster_config_is_refused_naming_the_field(tmp_path: Path, change: dict[str, Any],
                                                        field: str) -> None:
    config = {"datastore": "etcd", "nodeName": "n1", "etcdEndpoints": ["http://127.0.0.1:1"],
              "backend": {"type": "vxlan"}, "confDir": str(tmp_path / "net.d"), **change}
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([*pycni_argv(), "agent", "--socket", str(tmp_path / "s" / "a.sock"),
                           "--metrics-address", "off", "--cluster-config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert field in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "net.d").exists()
    assert not (tmp_path / "s").exists()


def test_deploy_manifests_are_accepted_by_the_api_server(kube_apiserver: Any) -> None:
    import yaml

    paths = {"ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
             "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
             "ServiceAccount": "/api/v1/namespaces/kube-system/serviceaccounts",
             "ConfigMap": "/api/v1/namespaces/kube-system/configmaps",
             "DaemonSet": "/apis/apps/v1/namespaces/kube-system/daemonsets"}
    deploy = Path(__file__).parents[2] / "deploy" / "kubernetes"
    created = []
    try:
        for name in ("rbac.yaml", "configmap.yaml", "daemonset.yaml"):
            for doc in yaml.safe_load_all((deploy / name).read_text()):
                path = paths[doc["kind"]]
                suffix = unique_name("dep")
                doc["metadata"]["name"] = f"{doc['metadata']['name']}-{suffix}"
                # server-side dry run first (schema and admission), then for real
                kube_apiserver.request("POST", path + "?dryRun=All", doc)
                answer = kube_apiserver.request("POST", path, doc)
                created.append(f"{path}/{answer['metadata']['name']}")
                if doc["kind"] == "ConfigMap":
                    config = json.loads(answer["data"]["cluster.json"])
                    assert config["datastore"] == "kubernetes"
    finally:
        for path in created:
            kube_apiserver.request("DELETE", path)
