"""50 concurrent portmap ADDs (and DELs) behind the Go bridge plugin, pycni against Go.

Usage (as root): ``.venv/bin/python bench/bench_portmap.py [--pods 50] [--rounds 3]``

Per round and implementation: a fresh host namespace, ``--pods`` container namespaces
attached with the Go bridge + host-local (not timed), then every pod's portmap ADD (two TCP
and one UDP mapping) started at once, then every DEL at once. The wall time of each burst
is what a node sees when many pods start together: a plugin that serialises on a global
lock, or spawns a process per rule, shows up here. Go's portmap 1.1.1 only has iptables;
pycni runs with both backends, as executables and in-process on threads (the node agent's
way, without the interpreter start-up each executable pays). Medians over the rounds and
the ratio pycni/go are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from _harness import plugin_dirs, run_plugin, temp_netns

from pycni.testing import call_plugin, cni_env, unique_name


def bridge_conf(bridge: str, data_dir: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": bridge,
            "isGateway": True, "hairpinMode": True,
            "ipam": {"type": "host-local", "subnet": "10.124.0.0/16", "dataDir": data_dir}}


def portmap_conf(backend: str | None, index: int, prev: dict[str, Any] | None) -> dict[str, Any]:
    port = 20000 + 3 * index
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "benchnet", "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {"portMappings": [
            {"hostPort": port, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": port + 1, "containerPort": 443, "protocol": "tcp"},
            {"hostPort": port + 2, "containerPort": 53, "protocol": "udp"},
        ]},
    }
    if backend is not None:
        conf["backend"] = backend
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def burst(pods: int, call: Any) -> float:
    """Run ``call(i)`` for every pod at once; the wall time until the last one finished."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=pods) as pool:
        list(pool.map(call, range(pods)))
    return time.perf_counter() - start


def one_round(go_dir: str, portmap_dir: str | None, backend: str | None, pods: int
              ) -> tuple[float, float]:
    """(ADD burst seconds, DEL burst seconds) for one implementation.

    ``portmap_dir`` None runs pycni's portmap in-process on threads (the node agent's way),
    which leaves out the interpreter start-up every executable call pays.
    """
    with ExitStack() as stack:
        host = stack.enter_context(temp_netns("h"))
        data = stack.enter_context(tempfile.TemporaryDirectory())
        nets = [stack.enter_context(temp_netns("c")) for _ in range(pods)]
        bconf = bridge_conf(unique_name("br"), data)
        prevs = []
        for i, ns in enumerate(nets):
            _, out = run_plugin(host, go_dir, "bridge", "ADD", bconf, f"pod{i}", ns)
            prevs.append(json.loads(out))

        def call(command: str, i: int, prev: dict[str, Any] | None) -> None:
            conf = portmap_conf(backend, i, prev)
            if portmap_dir is not None:
                run_plugin(host, portmap_dir, "portmap", command, conf, f"pod{i}", nets[i])
                return
            env = cni_env(command, container_id=f"pod{i}", netns=nets[i])
            call_plugin(host, "portmap", env, conf).ok()

        def add(i: int) -> None:
            call("ADD", i, prevs[i])

        def delete(i: int) -> None:
            call("DEL", i, None)

        t_add = burst(pods, add)
        t_del = burst(pods, delete)
        for i, ns in enumerate(nets):
            run_plugin(host, go_dir, "bridge", "DEL", bconf, f"pod{i}", ns)
        return t_add, t_del


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    with plugin_dirs() as dirs:
        impls: dict[str, tuple[str | None, str | None]] = {
            "go (iptables)": (dirs["go"], None),
            "pycni nftables": (dirs["pycni"], "nftables"),
            "pycni iptables": (dirs["pycni"], "iptables"),
            "in-process nft": (None, "nftables"),
            "in-process ipt": (None, "iptables"),
        }
        for _ in range(opts.rounds):
            for label, (portmap_dir, backend) in impls.items():
                results.setdefault(label, []).append(
                    one_round(dirs["go"], portmap_dir, backend, opts.pods))
    go_add = statistics.median(r[0] for r in results["go (iptables)"])
    go_del = statistics.median(r[1] for r in results["go (iptables)"])
    print(f"portmap behind bridge: {opts.pods} concurrent ADDs, then {opts.pods} concurrent "
          f"DELs; median wall time of the burst over {opts.rounds} rounds")
    print(f"{'implementation':<18}{'ADD s':>8}{'ratio':>8}{'DEL s':>8}{'ratio':>8}")
    for label, runs in results.items():
        t_add = statistics.median(r[0] for r in runs)
        t_del = statistics.median(r[1] for r in runs)
        print(f"{label:<18}{t_add:>8.2f}{t_add / go_add:>7.2f}x{t_del:>8.2f}"
              f"{t_del / go_del:>7.2f}x")


if __name__ == "__main__":
    main()
