"""containerd's CRI runs a multi-network pod on pycni's ``multus``, as the kubelet drives it.

The chain a node runs: the Pod object exists in a real kube-apiserver with a networks
annotation naming a NAD; the kubelet's RunPodSandbox (sent here by :class:`CRIClient`) makes
containerd (Debian's 1.6, private config, in a test host namespace) create the pod netns and
call the first config in its ``cni.conf_dir`` - a ``00-multus.conf`` written by ``pycni multus
gen-config`` over a bridge conflist - with ``K8S_POD_NAMESPACE/NAME/UID`` in CNI_ARGS, through
the executables ``pycni install`` wrote into its ``cni.bin_dir``. StopPodSandbox and
RemovePodSandbox must take everything down again.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cri_env import PodMeta, containerd_in, missing_tools, sandbox_netns

from pycni.testing import NAD_CRD, KubeAPIServer, forward_into, ip_json, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.cluster,
              pytest.mark.timeout(600)]

STATUS = "k8s.v1.cni.cncf.io/network-status"
CLUSTER_SUBNET = "10.236.0.0/24"
NAD_SUBNET = "10.237.0.0/24"


def _pycni(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pycni.cli", *args], check=True,
                   capture_output=True, timeout=120)


def _addresses(netns: str) -> dict[str, list[str]]:
    return {link["ifname"]: [a["local"] for a in link.get("addr_info", [])
                             if not ipaddress.ip_address(a["local"]).is_link_local]
            for link in ip_json(netns, "addr", "show")}


def _leases(ipam: Path) -> list[str]:
    return sorted(f"{d.name}/{f.name}" for d in ipam.iterdir() for f in d.iterdir()
                  if not f.name.startswith(("last_reserved_ip", "lock"))) if ipam.exists() else []


def _records(cni_dir: Path) -> list[str]:
    pods = cni_dir / "pods"
    return sorted(p.name for p in pods.glob("*.json")) if pods.exists() else []


def _veths(host_ns: str) -> list[str]:
    return [link["ifname"] for link in ip_json(host_ns, "-d", "link", "show")
            if link.get("linkinfo", {}).get("info_kind") == "veth"]


def _in_subnet(address: str, subnet: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(subnet)


def test_run_pod_sandbox_attaches_the_pods_networks(
        host_ns: str, tmp_path: Path, kube_apiserver: KubeAPIServer, kube_namespace: str
        ) -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")
    api = kube_apiserver
    bin_dir, conf_dir, ipam, cni_dir = (tmp_path / d for d in ("bin", "net.d", "ipam", "multus"))
    conf_dir.mkdir()
    # No agent listens on this socket: the executables run their plugin themselves, in the
    # namespace containerd runs them in.
    _pycni("install", "--bin-dir", str(bin_dir), "--socket", str(tmp_path / "none" / "sock"))
    cluster = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": unique_name("br"), "isGateway": True,
         "ipam": {"type": "host-local", "subnet": CLUSTER_SUBNET,
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam)}}]}
    (conf_dir / "10-podnet.conflist").write_text(json.dumps(cluster))
    _pycni("multus", "gen-config", "--conf-dir", str(conf_dir), "--kubeconfig", api.kubeconfig,
           "--bin-dir", str(bin_dir))
    multus_conf = conf_dir / "00-multus.conf"
    conf = json.loads(multus_conf.read_text())
    conf["cniDir"] = str(cni_dir)  # the pod records in the test's directory
    multus_conf.write_text(json.dumps(conf))

    api.create_crd(NAD_CRD)
    nad = {"cniVersion": "1.0.0", "type": "bridge", "bridge": unique_name("br"),
           "ipam": {"type": "host-local", "subnet": NAD_SUBNET, "dataDir": str(ipam)}}
    api.request("POST", f"/apis/k8s.cni.cncf.io/v1/namespaces/{kube_namespace}/"
                        "network-attachment-definitions", {
                            "apiVersion": "k8s.cni.cncf.io/v1",
                            "kind": "NetworkAttachmentDefinition",
                            "metadata": {"name": "storage"},
                            "spec": {"config": json.dumps(nad)}})
    pod = api.request("POST", f"/api/v1/namespaces/{kube_namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": unique_name("pod"),
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "storage"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "pause"}]}})
    meta = PodMeta(pod["metadata"]["name"], kube_namespace, pod["metadata"]["uid"])
    (tmp_path / "logs").mkdir()

    with forward_into(host_ns, api.port), containerd_in(host_ns, bin_dir, conf_dir) as ctd:
        assert ctd.cri is not None
        try:
            sandbox = ctd.cri.run_pod_sandbox(meta, str(tmp_path / "logs"))
        except Exception as exc:
            raise AssertionError(f"RunPodSandbox failed: {exc}\n{ctd.log()}") from exc
        pod_ip, state, info = ctd.cri.sandbox_status(sandbox)
        netns = sandbox_netns(info)
        assert state == 0  # SANDBOX_READY
        assert netns.startswith("/var/run/netns/cni-")

        addrs = _addresses(netns)
        assert set(addrs) == {"lo", "eth0", "net1"}
        (eth0,), (net1,) = addrs["eth0"], addrs["net1"]
        assert _in_subnet(eth0, CLUSTER_SUBNET)
        assert _in_subnet(net1, NAD_SUBNET)
        assert pod_ip == eth0  # containerd took the pod IP from the cluster network's result

        fresh = api.request("GET", f"/api/v1/namespaces/{kube_namespace}/pods/{meta.name}")
        status = json.loads(fresh["metadata"]["annotations"][STATUS])
        assert [(s["name"], s["interface"], s["ips"], s.get("default", False))
                for s in status] == [("podnet", "eth0", [eth0], True),
                                     (f"{kube_namespace}/storage", "net1", [net1], False)]
        assert len(_records(cni_dir)) == 1
        assert len(_leases(ipam)) == 2
        assert len(_veths(host_ns)) == 2

        ctd.cri.stop_pod_sandbox(sandbox)
        assert _veths(host_ns) == []
        assert _leases(ipam) == []
        assert _records(cni_dir) == []
        ctd.cri.remove_pod_sandbox(sandbox)
        assert sandbox not in ctd.cri.list_sandboxes()
        assert not Path(netns).exists()
