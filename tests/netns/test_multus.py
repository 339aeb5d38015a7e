"""The multus meta plugin against a real kube-apiserver, with real delegates in test netns.

NADs come from ``spec.config`` and from files in ``confDir``; the pod's annotation selects
them in both forms; network-status is read back from the API server and compared with what
is in the pod's namespace.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycni.host import run_in_netns
from pycni.multi import NETWORK_STATUS_ANNOTATION, KubeSource, Multus, NadInfo, PodInfo
from pycni.testing import (
    NAD_CRD,
    EtcdServer,
    KubeAPIServer,
    call_plugin,
    cni_env,
    ip_json,
    ns_run,
    unique_name,
)

pytestmark = [pytest.mark.netns, pytest.mark.cluster]


def make_nad(api: KubeAPIServer, namespace: str, name: str, config: dict[str, Any] | None,
             annotations: dict[str, str] | None = None) -> None:
    api.create_crd(NAD_CRD)
    body: dict[str, Any] = {"apiVersion": "k8s.cni.cncf.io/v1",
                            "kind": "NetworkAttachmentDefinition",
                            "metadata": {"name": name, "annotations": annotations or {}},
                            "spec": {"config": json.dumps(config)} if config else {}}
    api.request("POST", f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/"
                        "network-attachment-definitions", body)


def make_pod(api: KubeAPIServer, namespace: str, annotations: dict[str, str]) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": unique_name("pod"), "annotations": annotations},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "pause"}]}}
    pod: dict[str, Any] = api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    return pod


def read_status(api: KubeAPIServer, pod: dict[str, Any]) -> list[dict[str, Any]]:
    meta = pod["metadata"]
    fresh = api.request("GET", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
    text = (fresh["metadata"].get("annotations") or {}).get(NETWORK_STATUS_ANNOTATION)
    return json.loads(text) if text else []


#: The test process's own namespace, where the API server listens on loopback.
ROOT_NETNS = f"/proc/{os.getpid()}/ns/net"


class RootNetnsSource(KubeSource):
    """The API client of a node whose host side is a test namespace: the plugin runs in
    ``host_ns`` (its loopback is not the API server's), so the requests go out from the test
    process's namespace, as they would from a real node's."""

    def pod(self, namespace: str, name: str) -> PodInfo:
        return run_in_netns(ROOT_NETNS, super().pod, namespace, name)

    def nad(self, namespace: str, name: str) -> NadInfo | None:
        return run_in_netns(ROOT_NETNS, super().nad, namespace, name)

    def set_network_status(self, pod: PodInfo, status: list[dict[str, Any]]) -> None:
        run_in_netns(ROOT_NETNS, super().set_network_status, pod, status)


@pytest.fixture(autouse=True)
def _api_from_the_root_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Multus, "source_factory", RootNetnsSource)


@dataclass
class Node:
    """One test node: a host netns, directories, the meta plugin's config."""

    host_ns: str
    tmp: Path
    api: KubeAPIServer
    bridge: str
    subnet: str
    extra: dict[str, Any]

    @property
    def ipam_dir(self) -> Path:
        return self.tmp / "ipam"

    @property
    def cni_dir(self) -> Path:
        return self.tmp / "multus"

    @property
    def conf_dir(self) -> Path:
        return self.tmp / "net.d"

    def conf(self) -> dict[str, Any]:
        cluster = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True,
             "ipam": {"type": "host-local", "subnet": self.subnet,
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.ipam_dir)}}]}
        return {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
                "kubeconfig": self.api.kubeconfig, "delegates": [cluster],
                "confDir": str(self.conf_dir), "cniDir": str(self.cni_dir),
                "binDir": str(self.tmp / "bin"), "logToStderr": False, **self.extra}

    def call(self, command: str, pod: dict[str, Any] | None, netns: str, cid: str,
             *, conf: dict[str, Any] | None = None) -> Any:
        args = "IgnoreUnknown=1"
        if pod is not None:
            meta = pod["metadata"]
            args += (f";K8S_POD_NAMESPACE={meta['namespace']};K8S_POD_NAME={meta['name']}"
                     f";K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={meta['uid']}")
        env = cni_env(command, container_id=cid, netns=netns, ifname="eth0", args=args,
                      path=str(self.tmp / "bin"))
        return call_plugin(self.host_ns, "multus", env, conf or self.conf())

    def leases(self) -> list[str]:
        """Addresses host-local holds, for every network (the lock files left out)."""
        if not self.ipam_dir.exists():
            return []
        return sorted(f"{d.name}/{f.name}" for d in self.ipam_dir.iterdir() for f in d.iterdir()
                      if not f.name.startswith(("last_reserved_ip", "lock")))

    def records(self) -> list[str]:
        """Record files (the lock files beside them left out; they go with the record)."""
        pods = self.cni_dir / "pods"
        return sorted(p.name for p in pods.iterdir() if p.suffix != ".lock") if (
            pods.exists()) else []

    def lock_files(self) -> list[str]:
        pods = self.cni_dir / "pods"
        return sorted(p.name for p in pods.glob("*.lock")) if pods.exists() else []


def links(netns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ip_json(netns, "addr", "show")}


def addresses(link: dict[str, Any]) -> list[str]:
    return [a["local"] for a in link.get("addr_info", [])
            if not ipaddress.ip_address(a["local"]).is_link_local]


@pytest.fixture
def node(host_ns: str, tmp_path: Path, kube_apiserver: KubeAPIServer) -> Node:
    (tmp_path / "bin").mkdir()  # empty: every delegate is a pycni type, run in-process
    (tmp_path / "net.d").mkdir()
    return Node(host_ns, tmp_path, kube_apiserver, unique_name("br"), "10.231.0.0/24", {})


def static_bridge(name: str | None) -> dict[str, Any]:
    """A second bridge with static IPAM (addresses from ``ips``) and tuning (``mac``)."""
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": unique_name("br"), "isGateway": False,
         "capabilities": {"ips": True}, "ipam": {"type": "static"}},
        {"type": "tuning", "capabilities": {"mac": True}}]}
    if name:
        conf["name"] = name
    return conf


def fixed(address: str, name: str | None = None) -> dict[str, Any]:
    """A bridge attachment with one fixed address (static IPAM in the config)."""
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "type": "bridge", "bridge": unique_name("br"),
                            "ipam": {"type": "static", "addresses": [{"address": address}]}}
    if name:
        conf["name"] = name
    return conf


def ptp_conf(node: Node, name: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "ptp", "ipam": {"type": "host-local", "subnet": "10.232.0.0/24",
                                 "dataDir": str(node.ipam_dir)}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "backend": "iptables"}]}


def test_pod_with_both_annotation_forms_and_network_status(
        node: Node, netns: str, kube_namespace: str) -> None:
    api, ns = node.api, kube_namespace
    make_nad(api, ns, "static-a", static_bridge(None))   # no name: the NAD's
    # NAD without spec.config: the file of that name in confDir
    (node.conf_dir / "ptp-b.conflist").write_text(json.dumps(ptp_conf(node, "ptp-b")))
    make_nad(api, ns, "ptp-b", None)
    make_nad(api, ns, "dummy-c", fixed("10.233.0.9/24", "dummy-c"))
    annotation = json.dumps([
        {"name": "static-a", "interface": "data0", "ips": ["10.77.0.5/24"],
         "mac": "02:00:00:00:77:05", "default-route": ["10.77.0.1"],
         "cni-args": {"note": "x"}},
        {"name": "ptp-b", "namespace": ns,
         "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
        {"name": "dummy-c"}])
    pod = make_pod(api, ns, {"k8s.v1.cni.cncf.io/networks": annotation})
    cid = unique_name("cid")
    result = node.call("ADD", pod, netns, cid).ok()
    # the runtime gets the cluster network's result
    assert [i["address"].split("/")[0] for i in result["ips"]] == ["10.231.0.2"]

    present = links(netns)
    assert {"eth0", "data0", "net2", "net3"} <= set(present)
    assert addresses(present["data0"]) == ["10.77.0.5"]
    assert present["data0"]["address"] == "02:00:00:00:77:05"
    assert addresses(present["net3"]) == ["10.233.0.9"]
    routes = ip_json(netns, "route", "show", "default")
    assert [(r["dev"], r["gateway"]) for r in routes] == [("data0", "10.77.0.1")]

    status = read_status(api, pod)
    assert [(s["name"], s["interface"], s["default"]) for s in status] == [
        ("podnet", "eth0", True), (f"{ns}/static-a", "data0", False),
        (f"{ns}/ptp-b", "net2", False), (f"{ns}/dummy-c", "net3", False)]
    for entry in status:
        link = present[entry["interface"]]
        assert entry["ips"] == addresses(link)
        assert entry.get("mac", link["address"]) == link["address"]
    assert status[1]["gateway"] == ["10.77.0.1"]
    assert "gateway" not in status[0]
    # portMappings reached ptp-b's portmap only
    rules = ns_run(node.host_ns, "iptables-save", "-t", "nat").stdout
    assert "--dport 18080" in rules
    assert node.records() == [f"{cid}_eth0.json"]
    record = json.loads((node.cni_dir / "pods" / f"{cid}_eth0.json").read_text())
    assert [a["state"] for a in record["attachments"]] == ["added"] * 4
    assert record["attachments"][1]["config"]["plugins"][0]["args"] == {"cni": {"note": "x"}}

    node.call("DEL", pod, netns, cid).ok()
    assert set(links(netns)) == {"lo"}
    assert node.leases() == []
    assert node.records() == []
    assert "--dport 18080" not in ns_run(node.host_ns, "iptables-save", "-t", "nat").stdout
    node.call("DEL", pod, netns, cid).ok()  # idempotent


def test_short_form_and_default_network_annotation(
        node: Node, netns: str, kube_namespace: str) -> None:
    api, ns = node.api, kube_namespace
    (node.conf_dir / "ptp-b.conflist").write_text(json.dumps(ptp_conf(node, "ptp-b")))
    make_nad(api, ns, "ptp-b", None)
    make_nad(api, ns, "alt", fixed("10.234.0.2/24"))
    pod = make_pod(api, ns, {"k8s.v1.cni.cncf.io/networks": f"{ns}/ptp-b@side0",
                             "v1.multus-cni.io/default-network": f"{ns}/alt"})
    cid = unique_name("cid")
    node.call("ADD", pod, netns, cid).ok()
    present = links(netns)
    assert addresses(present["eth0"]) == ["10.234.0.2"]  # the default network replaced
    assert "side0" in present
    status = read_status(api, pod)
    assert [(s["name"], s["interface"], s["default"]) for s in status] == [
        (f"{ns}/alt", "eth0", True), (f"{ns}/ptp-b", "side0", False)]
    node.call("DEL", pod, netns, cid).ok()
    assert set(links(netns)) == {"lo"}
    assert node.leases() == []


def _assert_nothing_left(node: Node, netns: str) -> None:
    assert set(links(netns)) == {"lo"}
    assert node.leases() == []
    assert node.records() == []
    assert node.lock_files() == []


@pytest.mark.parametrize(("case", "match"), [
    ("missing", "does not exist"),
    ("malformed", "expected a JSON list"),
    ("unknown-type", "nosuchplugin"),
    ("capability", 'declares the capability "mac"'),
])
def test_bad_selection_fails_cleanly(node: Node, netns: str, kube_namespace: str,
                                     case: str, match: str) -> None:
    api, ns = node.api, kube_namespace
    (node.conf_dir / "ptp-b.conflist").write_text(json.dumps(ptp_conf(node, "ptp-b")))
    make_nad(api, ns, "ptp-b", None)
    make_nad(api, ns, "broken", {"cniVersion": "1.0.0", "type": "nosuchplugin"})
    annotation = {
        "missing": "ptp-b,not-there",
        "malformed": '[{"name": "ptp-b"',
        "unknown-type": "ptp-b,broken",
        "capability": json.dumps([{"name": "ptp-b", "mac": "02:00:00:00:00:01"}]),
    }[case]
    pod = make_pod(api, ns, {"k8s.v1.cni.cncf.io/networks": annotation})
    call = node.call("ADD", pod, netns, unique_name("cid"))
    assert call.status == 1
    assert match in call.json["msg"] or match in call.json.get("details", "")
    # the cluster network and ptp-b were added before "broken" failed: all undone
    _assert_nothing_left(node, netns)


def test_namespace_isolation(node: Node, netns: str, kube_namespace: str,
                             kube_apiserver: KubeAPIServer) -> None:
    other = unique_name("ns")
    kube_apiserver.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    try:
        dummy = fixed("10.235.0.2/24")
        make_nad(node.api, other, "foreign", dummy)
        global_name = unique_name("g")
        make_nad(node.api, "default", global_name, dummy)
        node.extra = {"namespaceIsolation": True}
        pod = make_pod(node.api, kube_namespace,
                       {"k8s.v1.cni.cncf.io/networks": f"{other}/foreign"})
        call = node.call("ADD", pod, netns, unique_name("cid"))
        assert call.status == 1
        assert "namespaceIsolation" in call.json["msg"]
        _assert_nothing_left(node, netns)
        # the global namespace ("default") stays usable
        pod = make_pod(node.api, kube_namespace,
                       {"k8s.v1.cni.cncf.io/networks": f"default/{global_name}"})
        cid = unique_name("cid")
        node.call("ADD", pod, netns, cid).ok()
        assert "net1" in links(netns)
        node.call("DEL", pod, netns, cid).ok()
        # without isolation the other namespace's NAD works
        node.extra = {}
        pod = make_pod(node.api, kube_namespace,
                       {"k8s.v1.cni.cncf.io/networks": f"{other}/foreign"})
        node.call("ADD", pod, netns, cid).ok()
        node.call("DEL", pod, netns, cid).ok()
        _assert_nothing_left(node, netns)
        node.api.request("DELETE", f"/apis/k8s.cni.cncf.io/v1/namespaces/default/"
                                   f"network-attachment-definitions/{global_name}")
    finally:
        kube_apiserver.request("DELETE", f"/api/v1/namespaces/{other}")


def test_del_with_the_api_server_stopped_and_the_nad_deleted(
        host_ns: str, netns: str, tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "net.d").mkdir()
    with EtcdServer() as etcd, KubeAPIServer(etcd.url) as api:
        node = Node(host_ns, tmp_path, api, unique_name("br"), "10.236.0.0/24", {})
        ns = "default"
        name = unique_name("nad")
        other = unique_name("nad")
        make_nad(api, ns, name, ptp_conf(node, name))
        make_nad(api, ns, other, fixed("10.237.0.2/24"))
        pod = make_pod(api, ns, {"k8s.v1.cni.cncf.io/networks": f"{name}, {other}@again0"})
        cid = unique_name("cid")
        node.call("ADD", pod, netns, cid).ok()
        assert {"eth0", "net1", "again0"} <= set(links(netns))
        assert len(node.leases()) == 2
        for nad in (name, other):
            api.request("DELETE", f"/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/"
                                  f"network-attachment-definitions/{nad}")
        api.stop()
        node.call("DEL", pod, netns, cid).ok()
        _assert_nothing_left(node, netns)


def test_del_keeps_the_record_while_a_delegate_holds_state(
        node: Node, netns: str, kube_namespace: str) -> None:
    """One delegate's DEL fails: the others still run, the record keeps only it, and the
    next DEL (once the cause is gone) finishes the job."""
    api, ns = node.api, kube_namespace
    marker = node.tmp / "refuse-del"
    # an exec'd plugin chained behind ptp whose DEL fails while the marker exists
    script = node.tmp / "bin" / "pytfailer"
    script.write_text(f"""#!/bin/sh
if [ "$CNI_COMMAND" = DEL ] && [ -e {marker} ]; then
  echo '{{"cniVersion": "1.0.0", "code": 11, "msg": "still holding state"}}'; exit 1
fi
if [ "$CNI_COMMAND" = ADD ]; then
  exec python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))'
fi
""")
    script.chmod(0o755)
    conf = ptp_conf(node, "ptp-f")
    conf["plugins"].append({"type": "pytfailer"})
    make_nad(api, ns, "ptp-f", conf)
    pod = make_pod(api, ns, {"k8s.v1.cni.cncf.io/networks": "ptp-f"})
    cid = unique_name("cid")
    node.call("ADD", pod, netns, cid).ok()
    marker.touch()
    call = node.call("DEL", pod, netns, cid)
    assert call.status == 1, call.stdout
    assert "still holding state" in call.json["msg"]
    record = json.loads((node.cni_dir / "pods" / f"{cid}_eth0.json").read_text())
    assert [a["network"] for a in record["attachments"]] == [f"{ns}/ptp-f"]
    # every other DEL ran: the cluster network and ptp itself are gone
    assert set(links(netns)) == {"lo"}
    assert node.leases() == []
    marker.unlink()
    node.call("DEL", pod, netns, cid).ok()
    _assert_nothing_left(node, netns)


def test_gen_config_output_drives_a_pod(node: Node, netns: str, kube_namespace: str) -> None:
    from pycni.multi import gen_config

    cluster = node.conf()["delegates"][0]
    (node.conf_dir / "10-podnet.conflist").write_text(json.dumps(cluster))
    conf = gen_config(str(node.conf_dir), kubeconfig=node.api.kubeconfig,
                      cni_dir=str(node.cni_dir))
    pod = make_pod(node.api, kube_namespace, {})
    cid = unique_name("cid")
    node.call("ADD", pod, netns, cid, conf=conf).ok()
    assert read_status(node.api, pod)[0]["interface"] == "eth0"
    node.call("DEL", pod, netns, cid, conf=conf).ok()
    _assert_nothing_left(node, netns)
