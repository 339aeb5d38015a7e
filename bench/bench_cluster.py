"""Cluster convergence and pod-to-pod throughput, on a ``pycni lab``.

Usage (as root): ``python3 bench/bench_cluster.py [--peers 10,50,100] [--no-iperf]``

Convergence: one real agent (a 1-node etcd + vxlan lab); N simulated nodes' records are
written straight to etcd in one burst; measured is the time from the first write until the
agent's kernel holds a route and an FDB entry for every one of them (polled every 20 ms), and
the time until it removed them all again after their keys are deleted. Goal (issue 13): under
1 s at 100 nodes. Also printed: how long the writes themselves took, how many reconcile
passes the agent made meanwhile (coalescing keeps this far below N), and the agent's
resident memory (VmRSS) while it holds N peers.

Throughput: iperf3 between a pod on node 1 and a pod on node 2 of a 2-node lab, for vxlan
and host-gw, against two pods on the same node (plain routed veths through the node's
bridge), as ratios. No timed assertions: figures only.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

from pycni.host import netns_path, run_in_netns
from pycni.testing import Lab, LabOptions, unique_name


def _etcd(url: str, path: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode())  # noqa: S310
    with urllib.request.urlopen(req, timeout=10):  # noqa: S310
        pass


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _kernel_counts(ns: str) -> tuple[int, int]:
    def read() -> tuple[int, int]:
        routes = subprocess.run(["ip", "-j", "route", "show", "dev", "pycni.1"],
                                capture_output=True, text=True, check=True).stdout
        fdb = subprocess.run(["bridge", "-j", "fdb", "show", "dev", "pycni.1"],
                             capture_output=True, text=True, check=True).stdout
        macs = [f for f in json.loads(fdb or "[]") if f.get("mac") != "00:00:00:00:00:00"]
        return len(json.loads(routes or "[]")), len(macs)

    result: tuple[int, int] = run_in_netns(netns_path(ns), read)
    return result


def _wait(ns: str, want: int, start: float, timeout: float = 60.0) -> float:
    while True:
        routes, fdb = _kernel_counts(ns)
        if routes == want and fdb == want:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return float("nan")
        time.sleep(0.02)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def convergence(counts: list[int]) -> dict[int, dict[str, float]]:
    """{N: figures} on one real agent: seconds to add N peers ("added"), to write them
    ("written"), to remove them ("removed"), reconcile passes while adding ("reconciles"),
    the agent's RSS in KiB with N peers ("rss") and before any ("rss0")."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="pytbench") as tmp:
        lab = Lab.up(LabOptions(nodes=1, pods_per_node=0, prefix=unique_name("bnc"),
                                directory=f"{tmp}/lab", reconcile_interval=30.0))
        try:
            url = lab.state["servers"]["etcd"]["url"]
            underlay = netns_path(lab.state["underlay"]["netns"])
            ns = lab.nodes[0]["netns"]
            pid = lab.nodes[0]["pid"]
            rss0 = _rss_kib(pid)
            for n in counts:
                subnets = list(ipaddress.ip_network("10.245.0.0/16").subnets(new_prefix=24))
                reconciles = lab.node_status(lab.nodes[0]["name"]).get("reconciles", 0)
                start = time.monotonic()

                def put_all(n: int = n, subnets: list[Any] = subnets) -> None:
                    for i in range(n):
                        record = {"subnets": [str(subnets[i])],
                                  "peer": {"backend": "vxlan", "underlay": f"10.98.{i // 250}"
                                           f".{i % 250 + 1}", "vni": 1, "port": 8472,
                                           "vtepMAC": f"0e:00:00:00:{i // 256:02x}:{i % 256:02x}"}}
                        _etcd(url, "/v3/kv/put", {"key": _b64(f"/pycni/network/nodes/sim{i}"),
                                                  "value": _b64(json.dumps(record))})

                run_in_netns(underlay, put_all)
                written = time.monotonic() - start
                added = _wait(ns, n, start)
                time.sleep(0.5)  # let the last pass write its status
                passes = lab.node_status(lab.nodes[0]["name"]).get("reconciles", 0) - reconciles
                rss = _rss_kib(pid)
                start = time.monotonic()
                run_in_netns(underlay, _etcd, url, "/v3/kv/deleterange",
                             {"key": _b64("/pycni/network/nodes/sim"),
                              "range_end": _b64("/pycni/network/nodes/sio")})
                removed = _wait(ns, 0, start)
                results[n] = {"added": added, "written": written, "removed": removed,
                              "reconciles": passes, "rss": rss, "rss0": rss0}
        finally:
            lab.down()
    return results


def _iperf(client: dict[str, Any], server: dict[str, Any], seconds: int) -> float:
    srv = run_in_netns(netns_path(server["netns"]), subprocess.Popen,
                       ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = run_in_netns(netns_path(client["netns"]), subprocess.run,
                           ["iperf3", "-c", server["ips"][0], "-t", str(seconds), "-J"],
                           capture_output=True, text=True, check=True).stdout
    finally:
        srv.wait(timeout=30)
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def throughput(seconds: int) -> dict[str, float]:
    """Gbit/s: "local" (two pods on one node), "vxlan" and "host-gw" (pods on two nodes)."""
    results = {}
    for backend in ("vxlan", "host-gw"):
        with tempfile.TemporaryDirectory(prefix="pytbench") as tmp:
            lab = Lab.up(LabOptions(nodes=2, pods_per_node=2, backend=backend,
                                    prefix=unique_name("bnt"), directory=f"{tmp}/lab"))
            try:
                pods = lab.pods
                same = [p for p in pods if p["node"] == pods[0]["node"]]
                other = next(p for p in pods if p["node"] != pods[0]["node"])
                if backend == "vxlan":
                    results["local"] = _iperf(same[0], same[1], seconds)
                results[backend] = _iperf(pods[0], other, seconds)
            finally:
                lab.down()
    return results


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="10,50,100")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--no-iperf", action="store_true")
    args = parser.parse_args()
    counts = [int(c) for c in args.peers.split(",")]
    print("convergence (one agent, N simulated nodes written to etcd at once)")
    for n, f in convergence(counts).items():
        print(f"  N={n:4d}: all routes+FDB present after {f['added']:.3f} s "
              f"(writes took {f['written']:.3f} s, {f['reconciles']:.0f} reconcile passes), "
              f"all gone after {f['removed']:.3f} s; agent RSS {f['rss'] / 1024:.1f} MiB "
              f"({f['rss0'] / 1024:.1f} MiB with no peers)")
    if not args.no_iperf:
        figures = throughput(args.seconds)
        local = figures["local"]
        print("pod-to-pod throughput (iperf3 TCP)")
        for name in ("local", "vxlan", "host-gw"):
            print(f"  {name:8s}: {figures[name]:6.2f} Gbit/s  ratio to local veths "
                  f"{figures[name] / local:.2f}")


if __name__ == "__main__":
    main()
