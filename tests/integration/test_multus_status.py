"""The ``multus`` plugin's network-status write against a real kube-apiserver: the PATCH is
tried on the resourceVersion the caller already has and re-reads the pod only on a 409."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycni.multi import NETWORK_STATUS_ANNOTATION, KubeSource, PodInfo
from pycni.testing import KubeAPIServer, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


class CountingSource(KubeSource):
    """Remembers the action of every request it makes."""

    def __init__(self, kubeconfig: str | None) -> None:
        super().__init__(kubeconfig)
        self.actions: list[str] = []

    def _call(self, action: str, fn: Any) -> Any:
        self.actions.append(action.split(maxsplit=1)[0])
        return super()._call(action, fn)


def _pod(api: KubeAPIServer, namespace: str) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": unique_name("pod")},
            "spec": {"containers": [{"name": "c", "image": "pause"}]}}
    pod: dict[str, Any] = api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    return pod


def _status(api: KubeAPIServer, namespace: str, name: str) -> list[dict[str, Any]]:
    fresh = api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    text = (fresh["metadata"].get("annotations") or {}).get(NETWORK_STATUS_ANNOTATION)
    return json.loads(text) if text else []


def test_status_on_a_current_version_needs_no_read(kube_apiserver: KubeAPIServer,
                                                   kube_namespace: str) -> None:
    meta = _pod(kube_apiserver, kube_namespace)["metadata"]
    source = CountingSource(kube_apiserver.kubeconfig)
    try:
        source.set_network_status(
            PodInfo(kube_namespace, meta["name"], meta["uid"],
                    resource_version=meta["resourceVersion"]), [{"name": "a"}])
    finally:
        source.close()
    assert source.actions == ["write"]
    assert _status(kube_apiserver, kube_namespace, meta["name"]) == [{"name": "a"}]


def test_status_on_a_stale_version_rereads_and_writes(kube_apiserver: KubeAPIServer,
                                                      kube_namespace: str) -> None:
    meta = _pod(kube_apiserver, kube_namespace)["metadata"]
    stale = meta["resourceVersion"]
    kube_apiserver.request(  # someone else writes the pod: the caller's copy is stale
        "PATCH", f"/api/v1/namespaces/{kube_namespace}/pods/{meta['name']}",
        {"metadata": {"labels": {"x": "y"}}}, content_type="application/merge-patch+json")
    source = CountingSource(kube_apiserver.kubeconfig)
    try:
        source.set_network_status(
            PodInfo(kube_namespace, meta["name"], meta["uid"], resource_version=stale),
            [{"name": "b"}])
    finally:
        source.close()
    assert source.actions == ["write", "read", "write"]
    assert _status(kube_apiserver, kube_namespace, meta["name"]) == [{"name": "b"}]


def test_status_skips_a_replaced_pod(kube_apiserver: KubeAPIServer,
                                     kube_namespace: str) -> None:
    meta = _pod(kube_apiserver, kube_namespace)["metadata"]
    source = CountingSource(kube_apiserver.kubeconfig)
    try:
        source.set_network_status(
            PodInfo(kube_namespace, meta["name"], "another-uid", resource_version="1"),
            [{"name": "c"}])
    finally:
        source.close()
    assert source.actions == ["write", "read"]
    assert _status(kube_apiserver, kube_namespace, meta["name"]) == []
