"""ADD of a pod with the cluster network and 3 extra attachments: pycni's ``multus`` against
the sum of the same delegates run one by one with the Go plugins.

Usage (as root): ``.venv/bin/python bench/bench_multus.py [--rounds 10]``

A real kube-apiserver holds the pod and its three NADs; the meta plugin reads them and writes
network-status each time (the Go column does no API work at all, as a lower bound for any
meta plugin). The plugins run with a test "host" namespace as their host side; the API
server's loopback port is forwarded into it, so the executable reaches it as on a node.
Goal (issue 14): at most 0.5x the Go sum (Multus adds about 1.5x, multus#452).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from _harness import Samples, plugin_dirs, report, run_plugin, temp_netns

from pycni.host import run_in_netns
from pycni.testing import EtcdServer, KubeAPIServer, ns_run, unique_name

NAD_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
    "spec": {"group": "k8s.cni.cncf.io", "scope": "Namespaced",
             "names": {"plural": "network-attachment-definitions",
                       "singular": "network-attachment-definition",
                       "kind": "NetworkAttachmentDefinition"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": True}}}]}}


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def forward_into(host_ns: str, port: int) -> None:
    """Accept on 127.0.0.1:``port`` inside ``host_ns``; connect to the same address here."""
    ns_run(host_ns, "ip", "link", "set", "lo", "up", check=True)

    def listen() -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        return sock

    server = run_in_netns(host_ns, listen)  # the socket stays in host_ns

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def networks(data: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, single-plugin config) of the cluster network and the three NADs."""
    def hl(subnet: str, name: str) -> dict[str, Any]:
        return {"type": "host-local", "subnet": subnet, "dataDir": f"{data}/{name}"}
    return [
        ("podnet", {"type": "bridge", "bridge": unique_name("br"), "isGateway": True,
                    "ipam": hl("10.140.0.0/24", "podnet")}),
        ("nad-a", {"type": "bridge", "bridge": unique_name("br"),
                   "ipam": hl("10.141.0.0/24", "nad-a")}),
        ("nad-b", {"type": "ptp", "ipam": hl("10.142.0.0/24", "nad-b")}),
        ("nad-c", {"type": "bridge", "bridge": unique_name("br"),
                   "ipam": hl("10.143.0.0/24", "nad-c")}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    opts = parser.parse_args()
    rows = {"ADD pod + 3 networks": {"go": Samples(), "pycni": Samples()},
            "DEL pod + 3 networks": {"go": Samples(), "pycni": Samples()}}
    with EtcdServer() as etcd, KubeAPIServer(etcd.url) as api, plugin_dirs() as dirs, \
            temp_netns("h") as host, tempfile.TemporaryDirectory() as data:
        forward_into(host, api.port)
        api.create_crd(NAD_CRD)
        nets = networks(data)
        for name, plugin in nets[1:]:
            api.request("POST", "/apis/k8s.cni.cncf.io/v1/namespaces/default/"
                                "network-attachment-definitions", {
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name},
                "spec": {"config": json.dumps({"cniVersion": "1.0.0", **plugin})}})
        multus = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
                  "kubeconfig": api.kubeconfig, "cniDir": f"{data}/multus",
                  "binDir": dirs["pycni"], "logToStderr": False,
                  "delegates": [{"cniVersion": "1.0.0", "name": "podnet", **nets[0][1]}]}
        for i in range(opts.rounds + 1):
            pod = api.request("POST", "/api/v1/namespaces/default/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"bench-{i}", "annotations": {
                    "k8s.v1.cni.cncf.io/networks": "nad-a,nad-b,nad-c"}},
                "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "pause"}]}})
            args = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench-{i};"
                    f"K8S_POD_INFRA_CONTAINER_ID=m{i};K8S_POD_UID={pod['metadata']['uid']}")
            with temp_netns("c") as ns:
                t_add, _ = run_plugin(host, dirs["pycni"], "multus", "ADD", multus,
                                      container_id=f"m{i}", netns=ns, args=args)
                t_del, _ = run_plugin(host, dirs["pycni"], "multus", "DEL", multus,
                                      container_id=f"m{i}", netns=ns, args=args)
            go_add = go_del = 0.0
            with temp_netns("c") as ns:
                for index, (name, plugin) in enumerate(nets):
                    conf = {"cniVersion": "1.0.0", "name": name, **plugin}
                    t, _ = run_plugin(host, dirs["go"], plugin["type"], "ADD", conf,
                                      container_id=f"g{i}", netns=ns,
                                      ifname="eth0" if index == 0 else f"net{index}")
                    go_add += t
                for index, (name, plugin) in reversed(list(enumerate(nets))):
                    conf = {"cniVersion": "1.0.0", "name": name, **plugin}
                    t, _ = run_plugin(host, dirs["go"], plugin["type"], "DEL", conf,
                                      container_id=f"g{i}", netns=ns,
                                      ifname="eth0" if index == 0 else f"net{index}")
                    go_del += t
            if i == 0:
                continue  # the first round creates the bridges: not steady state
            rows["ADD pod + 3 networks"]["pycni"].values.append(t_add)
            rows["DEL pod + 3 networks"]["pycni"].values.append(t_del)
            rows["ADD pod + 3 networks"]["go"].values.append(go_add)
            rows["DEL pod + 3 networks"]["go"].values.append(go_del)
        assert not list(Path(data, "multus", "pods").glob("*.json"))
    print(report(f"multus: cluster network + 3 NADs, {opts.rounds} rounds, median wall time "
                 "(go = sum of the delegates' calls)", rows))


if __name__ == "__main__":
    main()
