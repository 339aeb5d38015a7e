"""Real pods for meta plugin tests: the Go bridge + host-local in a test host namespace.

A meta plugin needs a prevResult and the kernel objects it describes. These helpers make
them with the reference bridge plugin (pycni's own bridge is tested elsewhere), with
host-local's dataDir in the test's tmp_path, and chain a plugin behind them.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pycni.testing import GO_PLUGIN_DIR, call_plugin, cni_env, exec_plugin_in, ns_run, wait_for


def bridge_pod(host_ns: str, netns: str, tmp_path: Path, *, bridge: str, subnet: str,
               cid: str, name: str = "pytnet", ifname: str = "eth0") -> dict[str, Any]:
    """Attach ``netns`` to ``bridge`` in ``host_ns``; the bridge plugin's 1.0.0 result."""
    conf = {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge,
            "isGateway": True,
            "ipam": {"type": "host-local", "subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": str(tmp_path / "ipam")}}
    env = cni_env("ADD", container_id=cid, netns=netns, ifname=ifname)
    result: dict[str, Any] = exec_plugin_in(host_ns, f"{GO_PLUGIN_DIR}/bridge", env, conf).ok()
    return result


def pod_ip(result: dict[str, Any]) -> str:
    """The first address of a result, without its prefix length."""
    return str(ipaddress.ip_interface(result["ips"][0]["address"]).ip)


def host_veth(result: dict[str, Any]) -> str:
    """The host-side veth a bridge result lists (an interface with no sandbox, not the bridge)."""
    return str(result["interfaces"][1]["name"])


def chained(conf: dict[str, Any], prev: dict[str, Any] | None, version: str = "1.0.0"
            ) -> dict[str, Any]:
    """A plugin config as the runtime hands it over: name, version and prevResult added."""
    out = {"cniVersion": version, "name": "pytnet", **conf}
    if prev is not None:
        out["prevResult"] = prev
    return out


def ours(host_ns: str, plugin: str, command: str, conf: dict[str, Any], *, cid: str,
         netns: str = "", ifname: str = "eth0") -> Any:
    """Run a pycni plugin; its parsed output (raises with the output on failure)."""
    env = cni_env(command, container_id=cid, netns=netns, ifname=ifname)
    return call_plugin(host_ns, plugin, env, conf).ok()


def theirs(host_ns: str, plugin: str, command: str, conf: dict[str, Any], *, cid: str,
           netns: str = "", ifname: str = "eth0") -> Any:
    """Run the Go reference plugin; its parsed output."""
    env = cni_env(command, container_id=cid, netns=netns, ifname=ifname)
    return exec_plugin_in(host_ns, f"{GO_PLUGIN_DIR}/{plugin}", env, conf).ok()


@contextmanager
def iperf_server(netns: str, port: int = 5201) -> Iterator[None]:
    """An iperf3 server in ``netns`` for one test."""
    proc = subprocess.Popen(["nsenter", f"--net={netns}", "--", "iperf3", "-s", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: str(port) in ns_run(netns, "ss", "-ltn").stdout)
        yield
    finally:
        proc.kill()
        proc.wait()


def iperf_bits_per_second(netns: str, server_ip: str, *, reverse: bool = False,
                          seconds: int = 4, port: int = 5201) -> float:
    """TCP goodput the server received (client in ``netns``; ``reverse``: server sends)."""
    argv = ["iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    # iperf3's server serves one test at a time and needs a moment to reset after one ends;
    # a client that arrives in that window is refused ("reset by peer", "server is busy").
    for attempt in range(5):
        report = json.loads(ns_run(netns, *argv, timeout=seconds + 30).stdout)
        error = str(report.get("error", ""))
        if "unable to connect" not in error and "busy" not in error:
            break
        time.sleep(0.2 * (attempt + 1))
    assert "error" not in report, report.get("error")
    return float(report["end"]["sum_received"]["bits_per_second"])
