"""A live ``pycni agent`` observed: its ``/trace`` ring and ``/topology`` page.

A chain of three plugins runs through the shims ``pycni install`` writes, which hand each
call to an agent in the test host namespace; the agent's metrics address (inside that
namespace) then serves the calls (``/trace``, and ``pycni trace --agent``) and the node's
picture (``/topology``, rendered by a headless chromium in the same namespace).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from agent_support import AgentProcess, install_shims

from pycni.host import run_in_netns
from pycni.invoke import REDACTED, assign_chains
from pycni.runtime import CNIConfig, RuntimeConf
from pycni.spec import NetworkConfigList
from pycni.testing import ns_run, unique_name

pytestmark = [pytest.mark.netns, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
SECRET = "pyt-agent-secret-token"  # noqa: S105 - must never reach a record


def _conflist(tmp_path: Path, bridge: str) -> NetworkConfigList:
    return NetworkConfigList.parse({
        "cniVersion": "1.0.0", "name": "pytagobs", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True,
             "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                      "ranges": [[{"subnet": "10.126.0.0/24"}]],
                      "kubeconfig": {"token": SECRET}}},
            {"type": "tuning", "sysctl": {}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]})


def _rt(netns: str, cid: str) -> RuntimeConf:
    return RuntimeConf(container_id=cid, netns=netns, ifname="eth0",
                       args=[("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", "pyt"),
                             ("K8S_POD_NAME", cid[-8:])],
                       capability_args={"portMappings": [
                           {"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]})


def _get(host_ns: str, url: str) -> bytes:
    """GET ``url`` from inside ``host_ns`` (where the agent's 127.0.0.1 is)."""

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - a test URL
            body: bytes = resp.read()
            return body

    result: bytes = run_in_netns(host_ns, fetch)
    return result


def _chain(records: list[dict[str, Any]], cid: str, command: str) -> list[dict[str, Any]]:
    return [r for r in assign_chains(records) if r["container"] == cid
            and r["command"] == command and r["depth"] == 0]


def test_agent_serves_the_trace_and_the_topology(host_ns: str, netns: str, netns2: str,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Calls the shims ran themselves would land here: none should.
    standalone = tmp_path / "standalone.jsonl"
    monkeypatch.setenv("PYCNI_TRACE", str(standalone))
    ns_run(host_ns, "ip", "link", "set", "lo", "up", check=True)
    sock = tmp_path / "run" / "agent.sock"
    bin_dir = install_shims(tmp_path / "bin", sock)
    cache = tmp_path / "cache"
    agent = AgentProcess(host_ns, sock, metrics="127.0.0.1:0", cache_dir=cache)
    cni, bridge = CNIConfig([str(bin_dir)], str(cache)), unique_name("br")
    net = _conflist(tmp_path, bridge)
    pods = [(netns, unique_name("ctr")), (netns2, unique_name("ctr"))]
    try:
        for ns, cid in pods:
            run_in_netns(host_ns, cni.add_network_list, net, _rt(ns, cid))
        base = f"http://{agent.metrics_address}"
        body = json.loads(_get(host_ns, f"{base}/trace?since=0"))
        assert SECRET not in json.dumps(body)
        records = body["records"]
        assert {r["source"] for r in records} == {"agent"}
        cid = pods[0][1]
        top = _chain(records, cid, "ADD")
        assert [r["plugin"] for r in top] == ["bridge", "tuning", "portmap"]
        assert [r["position"] for r in top] == [0, 1, 2]
        assert len({r["chain"] for r in top}) == 1
        assert all(r["status"] == 0 for r in top)
        assert top[2]["result"]["ips"][0]["address"] == "10.126.0.2/24"
        ipam = next(r for r in records if r["container"] == cid and r["depth"] == 1)
        assert ipam["plugin"] == "host-local"
        assert ipam["config"]["ipam"]["kubeconfig"] == {"token": REDACTED}
        # The same calls through the CLI, which asks the agent.
        out = subprocess.run(
            ["nsenter", f"--net={host_ns}", "--", sys.executable, "-m", "pycni.cli", "trace",
             "--agent", agent.metrics_address, "--file", str(tmp_path / "none.jsonl"),
             "--container", cid, "--json"],
            capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        assert SECRET not in out.stdout
        shown = [json.loads(line) for line in out.stdout.splitlines()]
        cli_top = [r for r in shown if r["command"] == "ADD" and r["depth"] == 0]
        assert [(r["plugin"], r["position"], r["seq"]) for r in cli_top] == [
            (r["plugin"], r["position"], r["seq"]) for r in top]
        assert len({r["chain"] for r in cli_top}) == 1
        assert not standalone.exists()

        page = _get(host_ns, f"{base}/topology").decode()
        assert "<svg" in page
        for address in ("10.126.0.2/24", "10.126.0.3/24"):
            assert address in page
        if not Path(CHROMIUM).exists() or not shutil.which("dot"):
            pytest.skip("needs chromium and graphviz (scripts/setup.sh)")
        browser = ["nsenter", f"--net={host_ns}", "--", CHROMIUM, "--headless",
                   "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update",
                   "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}"]
        dom = subprocess.run([*browser, "--dump-dom", f"{base}/topology"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        shot = tmp_path / "agent-topology.png"
        subprocess.run([*browser, "--window-size=1400,900", f"--screenshot={shot}",
                        f"{base}/topology"], capture_output=True, timeout=120, check=True)
        print(f"topology screenshot: {shot}")
        assert shot.stat().st_size > 1000
        assert "<svg" in dom
        for address in ("10.126.0.2/24", "10.126.0.3/24"):
            assert address in dom
        for _ns, pod_cid in pods:
            assert f"pyt/{pod_cid[-8:]}" in dom
        assert dom.count(bridge) >= 2  # the bridge node and the table
        assert "*:18081 -&gt; 80/tcp" in dom
    finally:
        try:
            for ns, pod_cid in pods:
                run_in_netns(host_ns, cni.delete_network_list, net, _rt(ns, pod_cid))
        finally:
            agent.stop()
