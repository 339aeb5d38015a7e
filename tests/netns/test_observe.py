"""Tracing a real chain, ``pycni inspect`` after ADD / a hand-made change / DEL, and the
topology page rendered in a headless chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pycni.host import run_in_netns
from pycni.invoke import assign_chains, read_trace_file
from pycni.runtime import CNIConfig, RuntimeConf
from pycni.spec import CNIError, NetworkConfigList
from pycni.testing import ns_run, unique_name

pytestmark = pytest.mark.netns

CHROMIUM = "/usr/bin/chromium"


def _conflist(tmp_path: Path, bridge: str, *, mtu: object = None) -> NetworkConfigList:
    tuning: dict[str, Any] = {"type": "tuning", "sysctl": {}}
    if mtu is not None:
        tuning["mtu"] = mtu
    return NetworkConfigList.parse({
        "cniVersion": "1.0.0", "name": "pytobs", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                      "ranges": [[{"subnet": "10.125.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "kubeconfig": {"token": "pyt-super-secret"}}},
            tuning,
            {"type": "portmap", "capabilities": {"portMappings": True}}]})


def _cni(tmp_path: Path) -> CNIConfig:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return CNIConfig([str(empty)], cache_dir=str(tmp_path / "cache"))


def _rt(netns: str, cid: str, ifname: str = "eth0") -> RuntimeConf:
    return RuntimeConf(container_id=cid, netns=netns, ifname=ifname,
                       args=[("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", "pyt"),
                             ("K8S_POD_NAME", "web")],
                       capability_args={"portMappings": [
                           {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]})


@pytest.fixture
def trace_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv("PYCNI_TRACE", str(path))
    return path


def _pycni(host_ns: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCNI_TRACE": str(tmp_path / "cli.jsonl"),
           "CNI_PATH": str(tmp_path / "bin")}
    return subprocess.run(["nsenter", f"--net={host_ns}", "--", sys.executable, "-m",
                           "pycni.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_a_chain_of_three_is_traced_as_one(host_ns: str, netns: str, netns2: str,
                                           tmp_path: Path, trace_path: Path) -> None:
    cni, bridge, cid = _cni(tmp_path), unique_name("br"), unique_name("ctr")
    net = _conflist(tmp_path, bridge)
    rt = _rt(netns, cid)
    try:
        run_in_netns(host_ns, cni.add_network_list, net, rt)
        bad = _conflist(tmp_path, bridge, mtu=10**30)
        with pytest.raises(CNIError):
            run_in_netns(host_ns, cni.add_network_list, bad, _rt(netns2, cid + "b"))
    finally:
        run_in_netns(host_ns, cni.delete_network_list, net, rt)
        run_in_netns(host_ns, cni.delete_network_list, net, _rt(netns2, cid + "b"))
    records, problems = read_trace_file(str(trace_path))
    assert problems == []
    text = trace_path.read_text()
    assert "pyt-super-secret" not in text
    chained = assign_chains(records)
    adds = [r for r in chained if r["command"] == "ADD" and r["container"] == cid]
    top = [r for r in adds if r["depth"] == 0]
    assert [r["plugin"] for r in top] == ["bridge", "tuning", "portmap"]
    assert [r["position"] for r in top] == [0, 1, 2]
    assert len({r["chain"] for r in adds}) == 1
    assert [r["plugin"] for r in adds if r["depth"]] == ["host-local"]  # bridge's IPAM
    assert top[0]["result"]["ips"][0]["address"] == "10.125.0.2/24"
    assert top[2]["result"]["ips"][0]["address"] == "10.125.0.2/24"
    assert all(r["status"] == 0 for r in adds)
    failed = [r for r in chained if r["container"] == cid + "b" and r["status"] != 0]
    assert [r["plugin"] for r in failed] == ["tuning"], [r["error"] for r in failed]
    assert failed[0]["error"]["code"] == 7
    assert "mtu" in failed[0]["error"]["msg"]
    dels = [r for r in chained if r["command"] == "DEL" and r["container"] == cid
            and r["depth"] == 0]
    assert [r["plugin"] for r in dels] == ["portmap", "tuning", "bridge"]
    assert len({r["chain"] for r in dels}) == 1
    # The CLI shows the same, without the secret.
    out = _pycni(host_ns, tmp_path, "trace", "--file", str(trace_path), "--agent", "off",
                 "--container", cid, "--json")
    assert out.returncode == 0, out.stderr
    assert "pyt-super-secret" not in out.stdout
    table = _pycni(host_ns, tmp_path, "trace", "--file", str(trace_path), "--agent", "off",
                   "--errors")
    assert "error 7" in table.stdout
    assert "pyt-super-secret" not in table.stdout


def _inspect(host_ns: str, tmp_path: Path, target: str) -> subprocess.CompletedProcess[str]:
    return _pycni(host_ns, tmp_path, "inspect", target, "--cache-dir", str(tmp_path / "cache"),
                  "--json")


def test_inspect_lists_what_the_attachment_made(host_ns: str, netns: str,
                                                tmp_path: Path, trace_path: Path) -> None:
    cni, bridge, cid = _cni(tmp_path), unique_name("br"), unique_name("ctr")
    net = _conflist(tmp_path, bridge)
    rt = _rt(netns, cid)
    run_in_netns(host_ns, cni.add_network_list, net, rt)
    try:
        result = json.loads((tmp_path / "cache" / "results" /
                             f"pytobs-{cid}-eth0").read_text())["result"]
        host_veth = next(i["name"] for i in result["interfaces"]
                         if "sandbox" not in i and i["name"] != bridge)
        out = _inspect(host_ns, tmp_path, "pyt/web")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        (att,) = report["attachments"]
        assert att["plugins"] == ["bridge", "tuning", "portmap"]
        assert att["differences"] == []
        objs = att["objects"]
        links = sorted((o["where"], o["what"]) for o in objs if o["kind"] == "link")
        assert links == sorted([("host", bridge), ("host", host_veth), ("pod", "eth0")])
        assert [(o["what"], o["details"]["dev"]) for o in objs if o["kind"] == "address"] == [
            ("10.125.0.2/24", "eth0")]
        routes = {o["what"] for o in objs if o["kind"] == "route"}
        assert routes == {"0.0.0.0/0", "10.125.0.0/24"}
        leases = [o for o in objs if o["kind"] == "lease"]
        assert [(o["what"], o["plugin"]) for o in leases] == [("10.125.0.2", "host-local")]
        nf = [o for o in objs if o["kind"] == "netfilter"]
        assert any(o["plugin"] == "portmap" and "18080" in o["what"] for o in nf)
        assert any(o["plugin"] == "bridge" and "masquerade" in o["what"].lower() for o in nf)
        veth = next(o for o in objs if o["what"] == host_veth)
        assert veth["details"]["master"] == bridge
        assert "hairpin" in veth["details"]["port"]
        human = _pycni(host_ns, tmp_path, "inspect", cid, "--cache-dir",
                       str(tmp_path / "cache"))
        assert "matches the recorded result" in human.stdout, human.stderr
        # A hand-made change: the pod's address removed.
        ns_run(netns, "ip", "addr", "del", "10.125.0.2/24", "dev", "eth0", check=True)
        changed = json.loads(_inspect(host_ns, tmp_path, netns).stdout)
        diffs = changed["attachments"][0]["differences"]
        assert any("address 10.125.0.2/24 is in the result but not in the pod" in d
                   for d in diffs), diffs
        assert any(d.startswith("CHECK of bridge fails") for d in diffs), diffs
    finally:
        run_in_netns(host_ns, cni.delete_network_list, net, rt)
    after = _inspect(host_ns, tmp_path, netns)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == {"target": netns, "attachments": [], "leftovers": []}
    human = _pycni(host_ns, tmp_path, "inspect", netns, "--cache-dir", str(tmp_path / "cache"))
    assert "nothing left behind" in human.stdout


def test_inspect_names_an_unknown_target(host_ns: str, tmp_path: Path) -> None:
    for target in ("pyt/nosuchpod", "/run/netns/pyt-no-such-ns", "0123456789abcdef"):
        out = _inspect(host_ns, tmp_path, target)
        assert out.returncode == 1
        assert f"no pod, netns or container ID {target!r}" in out.stderr
        assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.skipif(not Path(CHROMIUM).exists() or not shutil.which("dot"),
                    reason="needs chromium and graphviz (scripts/setup.sh)")
def test_topology_page_in_a_browser(host_ns: str, netns: str, netns2: str,
                                    tmp_path: Path, trace_path: Path) -> None:
    cni, bridge = _cni(tmp_path), unique_name("br")
    net = _conflist(tmp_path, bridge)
    pods = [(netns, unique_name("ctr")), (netns2, unique_name("ctr"))]
    for ns, cid in pods:
        run_in_netns(host_ns, cni.add_network_list, net, _rt(ns, cid))
    try:
        page = tmp_path / "topology.html"
        out = _pycni(host_ns, tmp_path, "graph", "--output", str(page), "--cache-dir",
                     str(tmp_path / "cache"))
        assert out.returncode == 0, out.stderr
        profile = tmp_path / "chromium"
        browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}"]
        dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        shot = tmp_path / "topology.png"
        subprocess.run([*browser, "--window-size=1400,900", f"--screenshot={shot}",
                        page.as_uri()], capture_output=True, timeout=120, check=True)
        print(f"topology screenshot: {shot}")
        assert shot.stat().st_size > 1000
        assert "<svg" in dom
        for address in ("10.125.0.2/24", "10.125.0.3/24"):
            assert address in dom
        assert dom.count(bridge) >= 2  # the bridge node and the table
        assert "pyt/web" in dom
        assert "*:18080 -&gt; 80/tcp" in dom
        for _ns, cid in pods:
            result = json.loads((tmp_path / "cache" / "results" /
                                 f"pytobs-{cid}-eth0").read_text())["result"]
            veth = next(i["name"] for i in result["interfaces"]
                        if "sandbox" not in i and i["name"] != bridge)
            assert veth in dom
        assert dom.count("class=\"edge\"") >= 4  # pod-veth and veth-bridge, twice
    finally:
        for ns, cid in pods:
            run_in_netns(host_ns, cni.delete_network_list, net, _rt(ns, cid))
