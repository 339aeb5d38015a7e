"""The real datastores the cluster tests run against: etcd and kube-apiserver on loopback."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.testing import (
    KUBERNETES_VERSION,
    NAD_CRD,
    APIStatusError,
    EtcdServer,
    KubeAPIServer,
    kubectl_binary,
    unique_name,
)

pytestmark = pytest.mark.cluster


def test_etcd_put_get_through_the_v3_json_gateway(etcd_server: EtcdServer,
                                                  etcd_prefix: str) -> None:
    key = f"{etcd_prefix}subnet/10.244.1.0-24"
    assert etcd_server.get(key) is None
    etcd_server.put(key, '{"node": "a"}')
    assert etcd_server.get(key) == b'{"node": "a"}'
    etcd_server.put(f"{etcd_prefix}other", "x")
    assert etcd_server.get_prefix(etcd_prefix) == {key.encode(): b'{"node": "a"}',
                                                   f"{etcd_prefix}other".encode(): b"x"}


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_etcd_restart_keeps_data(kill: bool) -> None:
    with EtcdServer() as etcd:
        etcd.put("/pyt/persist", "kept")
        url, pid = etcd.url, etcd.pid
        etcd.restart(kill=kill)
        assert etcd.url == url
        assert etcd.pid != pid
        assert etcd.get("/pyt/persist") == b"kept"
        data_dir = etcd.data_dir
    assert not data_dir.exists()
    assert etcd.pid is None


# -- kube-apiserver ---------------------------------------------------------------------------


def _node(name: str, pod_cidr: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}}


@pytest.fixture
def node_name(kube_apiserver: KubeAPIServer) -> Iterator[str]:
    name = unique_name("node")
    yield name
    with contextlib.suppress(APIStatusError):
        kube_apiserver.request("DELETE", f"/api/v1/nodes/{name}")


def test_kube_apiserver_reports_v1_20_2(kube_apiserver: KubeAPIServer) -> None:
    version = kube_apiserver.request("GET", "/version")
    assert version["gitVersion"] == KUBERNETES_VERSION == "v1.20.2"
    assert (version["major"], version["minor"]) == ("1", "20")


def test_node_with_pod_cidr_round_trips(kube_apiserver: KubeAPIServer, node_name: str) -> None:
    created = kube_apiserver.request("POST", "/api/v1/nodes", _node(node_name, "10.244.7.0/24"))
    assert created["metadata"]["name"] == node_name
    node = kube_apiserver.request("GET", f"/api/v1/nodes/{node_name}")
    assert node["spec"]["podCIDR"] == "10.244.7.0/24"
    assert node["spec"]["podCIDRs"] == ["10.244.7.0/24"]
    patched = kube_apiserver.request("PATCH", f"/api/v1/nodes/{node_name}",
                                     {"metadata": {"annotations": {"pycni.io/vtep": "x"}}})
    assert patched["metadata"]["annotations"]["pycni.io/vtep"] == "x"
    with pytest.raises(APIStatusError) as info:
        kube_apiserver.request("GET", f"/api/v1/nodes/{node_name}x")
    assert info.value.status == 404


def test_kubectl_uses_the_kubeconfig(kube_apiserver: KubeAPIServer, node_name: str) -> None:
    kube_apiserver.request("POST", "/api/v1/nodes", _node(node_name, "10.244.8.0/24"))
    out = subprocess.run([kubectl_binary(), "--kubeconfig", kube_apiserver.kubeconfig, "get",
                          "node", node_name, "-o", "json"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(out)["spec"]["podCIDR"] == "10.244.8.0/24"


def test_network_attachment_definition_crd(kube_apiserver: KubeAPIServer,
                                           kube_namespace: str) -> None:
    kube_apiserver.create_crd(NAD_CRD)
    config = json.dumps({"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0"})
    path = f"/apis/k8s.cni.cncf.io/v1/namespaces/{kube_namespace}/network-attachment-definitions"
    kube_apiserver.request("POST", path, {
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "macvlan-conf"}, "spec": {"config": config}})
    nad = kube_apiserver.request("GET", f"{path}/macvlan-conf")
    assert nad["spec"]["config"] == config
    assert [i["metadata"]["name"] for i in kube_apiserver.request("GET", path)["items"]] == [
        "macvlan-conf"]


def test_watch_on_nodes_sees_added(kube_apiserver: KubeAPIServer, node_name: str) -> None:
    listed = kube_apiserver.request("GET", "/api/v1/nodes")
    kube_apiserver.request("POST", "/api/v1/nodes", _node(node_name, "10.244.9.0/24"))
    # from the list's resourceVersion, the watch replays what happened since: our node
    events = kube_apiserver.watch("/api/v1/nodes",
                                  resource_version=listed["metadata"]["resourceVersion"],
                                  timeout_seconds=20)
    try:
        for event in events:
            if event["object"]["metadata"]["name"] == node_name:
                assert event["type"] == "ADDED"
                assert event["object"]["spec"]["podCIDR"] == "10.244.9.0/24"
                break
        else:
            pytest.fail(f"the watch ended without an event for {node_name}")
    finally:
        events.close()


def test_restart_on_the_same_etcd_keeps_objects_and_applies_rotated_tokens() -> None:
    with EtcdServer() as etcd, KubeAPIServer(etcd.url) as kube:
        name = unique_name("node")
        kube.request("POST", "/api/v1/nodes", _node(name, "10.244.3.0/24"))
        old = kube.add_token("pycni-agent", ["system:masters"])
        with pytest.raises(APIStatusError) as info:
            kube.request("GET", f"/api/v1/nodes/{name}", token=old)
        assert info.value.status == 401  # the token file is read at start only
        kube.restart()
        assert kube.request("GET", f"/api/v1/nodes/{name}", token=old)["spec"]["podCIDR"] == (
            "10.244.3.0/24")

        new = kube.add_token("pycni-agent", ["system:masters"])
        kube.remove_token(old)
        kube.restart(kill=True)
        assert kube.request("GET", f"/api/v1/nodes/{name}", token=new)["metadata"]["name"] == name
        with pytest.raises(APIStatusError) as info:
            kube.request("GET", f"/api/v1/nodes/{name}", token=old)
        assert info.value.status == 401
        pki = Path(kube.ca_file).parent
    assert not pki.exists()
