"""ADD of a pod with the cluster network and 3 extra attachments: pycni's ``multus`` against
the sum of the same delegates run one by one with the Go plugins.

Usage (as root): ``.venv/bin/python bench/bench_multus.py [--rounds 10]
[--mode agent|standalone] [--profile FILE]``

A real kube-apiserver holds the pod and its three NADs; the meta plugin reads them and writes
network-status each time (the Go column does no API work at all, as a lower bound for any
meta plugin). The plugins run with a test "host" namespace as their host side; the API
server's loopback port is forwarded into it, so the executable reaches it as on a node.

``--mode agent`` (the default, as on a node): a ``pycni agent`` runs inside that host
namespace (its threads stay there, so its plugins act on it), the shims point at its socket,
and its watch cache is on (``--node-name`` + ``--multus-config``): pods and NADs come from
the cache, the delegates run in-process. ``--mode standalone``: no agent, every executable
runs its plugin itself. ``--profile FILE`` (agent mode): cProfile of every call the agent
runs, written as pstats to FILE when the agent stops.
Goal (issue 14): at most 0.5x the Go sum (Multus adds about 1.5x, multus#452).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _harness import GO_DIR, Samples, report, run_plugin, temp_netns
from bench_agent import agent_in, install_ours_with_socket

from pycni.testing import (
    NAD_CRD,
    EtcdServer,
    KubeAPIServer,
    forward_into,
    unique_name,
)

#: The agent's entry under --profile: every call it runs in-process is profiled (cProfile
#: follows one thread, so each call gets its own profiler) and the sum is written at exit.
_PROFILED_AGENT = """
import atexit, cProfile, pstats, sys, threading
from pycni.daemon import _agent
out, lock, stats = sys.argv.pop(1), threading.Lock(), []
inner = _agent.run_in_process
def run_in_process(*args, **kwargs):
    prof = cProfile.Profile()
    try:
        return prof.runcall(inner, *args, **kwargs)
    finally:
        with lock:
            stats.append(prof)
def dump():
    if stats:
        total = pstats.Stats(stats[0])
        for prof in stats[1:]:
            total.add(prof)
        total.dump_stats(out)
_agent.run_in_process = run_in_process
atexit.register(dump)
from pycni.cli import main
main()
"""

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


@contextlib.contextmanager
def pycni_side(host: str, data: str, multus: dict[str, Any], mode: str,
               profile: str | None) -> Iterator[str]:
    """pycni's plugin directory; in agent mode with an agent (watch cache on) in ``host``
    serving it until the block ends."""
    bin_dir, sock = f"{data}/bin", f"{data}/run/agent.sock"
    if mode == "standalone":
        sock = f"{data}/none/agent.sock"  # no agent there: the shims run their plugin
    install_ours_with_socket(bin_dir, sock)
    multus["binDir"] = bin_dir
    if mode == "standalone":
        yield bin_dir
        return
    conf = Path(data, "00-multus.conf")
    conf.write_text(json.dumps(multus))
    entry = ("-c", _PROFILED_AGENT, profile) if profile else ("-m", "pycni.cli")
    with agent_in(host, sock, ["--node-name", "n", "--multus-config", str(conf)], entry):
        yield bin_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mode", choices=("agent", "standalone"), default="agent")
    parser.add_argument("--profile", metavar="FILE")
    opts = parser.parse_args()
    rows = {"ADD pod + 3 networks": {"go": Samples(), "pycni": Samples()},
            "DEL pod + 3 networks": {"go": Samples(), "pycni": Samples()}}
    with EtcdServer() as etcd, KubeAPIServer(etcd.url) as api, \
            temp_netns("h") as host, tempfile.TemporaryDirectory() as data, \
            contextlib.ExitStack() as stack:
        stack.enter_context(forward_into(host, api.port))
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
                  "logToStderr": False,
                  "delegates": [{"cniVersion": "1.0.0", "name": "podnet", **nets[0][1]}]}
        dirs = {"go": GO_DIR,
                "pycni": stack.enter_context(pycni_side(host, data, multus, opts.mode,
                                                        opts.profile))}
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
    print(report(f"multus ({opts.mode}): cluster network + 3 NADs, {opts.rounds} rounds, "
                 "median wall time (go = sum of the delegates' calls)", rows))


if __name__ == "__main__":
    main()
