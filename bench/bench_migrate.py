"""Live switch of a pod's default network: pings lost, the gap, and a TCP connection.

Usage (as root): ``.venv/bin/python bench/bench_migrate.py [--rounds 4]``

Two pods on a bridge network (pycni bridge + host-local); one of them is switched to a ptp
network on the same subnet and back, ``--rounds`` times, keeping its address, while the other
pod and the node ping it every 10 ms and the other pod keeps one TCP connection to it busy
(a numbered message every 10 ms, echoed). Printed per round: pings lost, the longest run of
lost pings (the gap), whether the TCP connection carried every message, and the switch time.
Goal (issue 14): the connection survives; at most one lost ping at 10 ms.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pycni.host import run_in_netns
from pycni.multi import Migration, MultusConfig, PodRecords
from pycni.testing import LiveTraffic, call_plugin, cni_env, ip_json, temp_netns, unique_name

SUBNET = "10.243.0.0/24"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name, temp_netns("h") as host_ns, \
            temp_netns("c") as pod_ns, temp_netns("c") as peer_ns:
        tmp = Path(tmp_name)
        (tmp / "net.d").mkdir()
        ipam = {"type": "host-local", "subnet": SUBNET, "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(tmp / "ipam")}
        bridge = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
            {"type": "bridge", "bridge": unique_name("br"), "isGateway": True, "ipam": ipam}]}
        ptp = {"cniVersion": "1.0.0", "name": "ptpnet", "plugins": [{"type": "ptp",
                                                                      "ipam": ipam}]}
        for net in (bridge, ptp):
            (tmp / "net.d" / f"{net['name']}.conflist").write_text(json.dumps(net))
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
            "delegates": [bridge], "confDir": str(tmp / "net.d"),
            "cniDir": str(tmp / "multus"), "binDir": str(tmp / "bin"), "logToStderr": False}
        (tmp / "bin").mkdir()
        pods = [(pod_ns, unique_name("cid"), "moved"), (peer_ns, unique_name("cid"), "peer")]
        for netns, cid, name in pods:
            env = cni_env("ADD", container_id=cid, netns=netns, path=str(tmp / "bin"),
                          args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={name}")
            call_plugin(host_ns, "multus", env, conf).ok()
        address = next(a["local"] for link in ip_json(pod_ns, "addr", "show")
                       if link["ifname"] == "eth0" for a in link["addr_info"]
                       if a["family"] == "inet")
        migration = Migration(MultusConfig.parse(conf), cni_path=[str(tmp / "bin")],
                              runtime_cache_dir=str(tmp / "runtime"))
        print(f"live switch of {address}: bridge <-> ptp, ping every 10 ms from a pod on "
              "the bridge and from the node, one TCP connection from the pod on the bridge")
        try:
            for round_no in range(args.rounds):
                target = "ptpnet" if round_no % 2 == 0 else "podnet"
                record = PodRecords(str(tmp / "multus")).find("bench", "moved")[0]
                with LiveTraffic(address, pod_ns, ping_from=[peer_ns, host_ns],
                                 tcp_from=peer_ns, workdir=tmp, port=5300 + round_no) as live:
                    start = time.monotonic()
                    result = run_in_netns(host_ns, migration.switch, record, target)
                    took = time.monotonic() - start
                    figures = live.stop()
                print(f"\nround {round_no + 1}: -> {target}: {result.status} {result.error} "
                      f"(switch took {took * 1000:.0f} ms)")
                print(figures.summary())
        finally:
            for netns, cid, name in pods:
                env = cni_env("DEL", container_id=cid, netns=netns, path=str(tmp / "bin"),
                              args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={name}")
                call_plugin(host_ns, "multus", env, conf)


if __name__ == "__main__":
    main()
