"""The node agent under load, in a test host namespace: concurrency and restarts.

A ``pycni agent`` process runs in ``host_ns``; calls go through the shims ``pycni install``
writes, run through ``nsenter`` into the same namespace, as a runtime on that node would.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from agent_support import AgentProcess, install_shims

from pycni.testing import (
    PluginCall,
    cni_env,
    exec_plugin_in,
    ip_json,
    ns_run,
    temp_netns,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.netns


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "run" / "agent.sock"


@pytest.fixture
def shims(tmp_path: Path, sock: Path) -> Path:
    return install_shims(tmp_path / "bin", sock)


@pytest.fixture
def agent(host_ns: str, sock: Path, shims: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(host_ns, sock)
    yield proc
    proc.stop()


def bridge_conf(tmp_path: Path, subnet: str = "10.77.0.0/24") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "pytagent", "type": "bridge",
            "bridge": unique_name("br"), "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(tmp_path / "ipam")}}


def call(host_ns: str, shims: Path, command: str, conf: dict[str, Any], *, cid: str,
         netns: str) -> PluginCall:
    env = cni_env(command, container_id=cid, netns=netns, path=str(shims))
    return exec_plugin_in(host_ns, str(shims / conf["type"]), env, conf, timeout=300)


def reserved(tmp_path: Path) -> list[str]:
    """Addresses host-local holds for the test network."""
    store = tmp_path / "ipam" / "pytagent"
    out = []
    for p in store.iterdir() if store.exists() else []:
        try:
            out.append(str(ipaddress.ip_address(p.name)))
        except ValueError:
            continue
    return sorted(out)


def host_veths(host_ns: str) -> list[str]:
    return [link["ifname"] for link in ip_json(host_ns, "link", "show")
            if link["ifname"].startswith("veth")]


def nat_rules_mention(host_ns: str, ips: list[str]) -> list[str]:
    text = ns_run(host_ns, "nft", "list", "ruleset").stdout
    text += ns_run(host_ns, "iptables-save", "-t", "nat").stdout
    return [ip for ip in ips if ip in text]


def pod_ip(result: PluginCall) -> str:
    return str(ipaddress.ip_interface(result.ok()["ips"][0]["address"]).ip)


def test_concurrent_adds_get_unique_addresses_and_del_cleans(
        host_ns: str, tmp_path: Path, shims: Path, agent: AgentProcess) -> None:
    conf = bridge_conf(tmp_path)
    n = 50
    with ExitStack() as stack:
        nss = [stack.enter_context(temp_netns("c")) for _ in range(n)]
        cids = [f"pytconc{i}" for i in range(n)]
        with ThreadPoolExecutor(n) as pool:
            added = list(pool.map(lambda i: call(host_ns, shims, "ADD", conf, cid=cids[i],
                                                 netns=nss[i]), range(n)))
        ips = [pod_ip(r) for r in added]
        assert len(set(ips)) == n
        assert reserved(tmp_path) == sorted(ips)
        for ns, ip in zip(nss, ips, strict=True):
            addrs = [a["local"] for link in ip_json(ns, "addr", "show", "eth0")
                     for a in link["addr_info"]]
            assert ip in addrs
        assert len(agent.calls("ADD")) == n  # the agent served every one
        assert len(host_veths(host_ns)) == n
        with ThreadPoolExecutor(n) as pool:
            deleted = list(pool.map(lambda i: call(host_ns, shims, "DEL", conf, cid=cids[i],
                                                   netns=nss[i]), range(n)))
        for d in deleted:
            d.ok()
        assert reserved(tmp_path) == []
        assert host_veths(host_ns) == []
        assert nat_rules_mention(host_ns, ips) == []


def _start_adds(pool: ThreadPoolExecutor, host_ns: str, shims: Path, conf: dict[str, Any],
                pods: list[tuple[str, str]]) -> list[Future[PluginCall]]:
    return [pool.submit(call, host_ns, shims, "ADD", conf, cid=cid, netns=ns)
            for cid, ns in pods]


def test_restart_under_load_completes_every_call(
        host_ns: str, tmp_path: Path, sock: Path, shims: Path) -> None:
    conf = bridge_conf(tmp_path, "10.78.0.0/24")
    n = 30
    with ExitStack() as stack:
        nss = [stack.enter_context(temp_netns("c")) for _ in range(n)]
        cids = [f"pytrst{i}" for i in range(n)]
        first = AgentProcess(host_ns, sock)
        stack.callback(first.stop)
        with ThreadPoolExecutor(n) as pool:
            futures = _start_adds(pool, host_ns, shims, conf, list(zip(cids, nss, strict=True)))
            assert wait_for(first.calls, timeout=120)
            first.terminate()
            # The replacement takes the socket over while the first one drains. The first
            # removes its socket when it handles SIGTERM; until then a second agent would
            # (rightly) refuse to start beside a live one.
            assert wait_for(lambda: not sock.exists(), timeout=60)
            second = AgentProcess(host_ns, sock)
            stack.callback(second.stop)
            results = [f.result() for f in futures]
        assert first.wait() == 0  # drained: every accepted call finished
        ips = [pod_ip(r) for r in results]  # every call succeeded
        assert len(set(ips)) == n
        assert reserved(tmp_path) == sorted(ips)
        assert len(host_veths(host_ns)) == n
        served = len(first.calls("ADD")) + len(second.calls("ADD"))
        assert 1 <= served <= n  # the rest ran standalone while no agent listened
        for cid, ns in zip(cids, nss, strict=True):
            call(host_ns, shims, "DEL", conf, cid=cid, netns=ns).ok()
        assert len(second.calls("DEL")) == n
        assert reserved(tmp_path) == []
        assert host_veths(host_ns) == []
        assert nat_rules_mention(host_ns, ips) == []


def _hold(hold_dir: Path, cids: list[str]) -> None:
    for cid in cids:
        (hold_dir / f"{cid}.hold").touch()


def _release(hold_dir: Path, cids: list[str]) -> None:
    for cid in cids:
        (hold_dir / f"{cid}.hold").unlink(missing_ok=True)


def _cut_off(agent: AgentProcess) -> None:
    """SIGTERM, and wait until the grace period is over (or the agent is gone)."""
    agent.terminate()
    assert wait_for(lambda: agent.logged("grace period over") or agent.proc.poll() is not None,
                    timeout=120)


def pod_links(netns: str) -> list[str]:
    return [link["ifname"] for link in ip_json(netns, "link", "show") if link["ifname"] != "lo"]


def test_add_running_when_the_grace_period_ends_is_rolled_back(
        host_ns: str, tmp_path: Path, sock: Path, shims: Path) -> None:
    """The ADD has configured everything and is still running at the cut-off: the caller
    gets code 11 and neither the veth nor the address is left behind."""
    conf = bridge_conf(tmp_path, "10.80.0.0/24")
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    with temp_netns("c") as ns, ExitStack() as stack:
        agent = AgentProcess(host_ns, sock, grace=0.5, hold_dir=hold_dir)
        stack.callback(agent.stop)
        stack.callback(_release, hold_dir, ["pytroll"])
        _hold(hold_dir, ["pytroll"])
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(call, host_ns, shims, "ADD", conf, cid="pytroll", netns=ns)
            assert wait_for((hold_dir / "pytroll.held").exists, timeout=120)
            [ip] = reserved(tmp_path)  # the ADD did its work and is still running
            assert len(host_veths(host_ns)) == 1
            _cut_off(agent)
            _release(hold_dir, ["pytroll"])
            result = future.result()
        assert agent.wait() == 1  # calls were cut off
        assert result.status == 1, result.stdout
        assert result.json["code"] == 11
        assert result.json["cniVersion"] == "1.0.0"
        assert "undid it" in result.json["msg"]
        assert reserved(tmp_path) == []
        assert host_veths(host_ns) == []
        assert pod_links(ns) == []
        assert nat_rules_mention(host_ns, [ip]) == []


def test_calls_cut_off_by_a_stop_ask_to_try_again_and_leave_nothing_half_done(
        host_ns: str, tmp_path: Path, sock: Path, shims: Path) -> None:
    """With no grace period, in-flight calls are cut: their shims print code 11.

    Some ADDs are held in flight, so at least those are cut off. Right after the stop, the
    state is exactly that of the successful calls; the runtime then DELs each failed
    attachment (the spec's rule after a failed ADD) and retries.
    """
    conf = bridge_conf(tmp_path, "10.79.0.0/24")
    n, held = 30, 3
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    with ExitStack() as stack:
        nss = [stack.enter_context(temp_netns("c")) for _ in range(n)]
        cids = [f"pytcut{i}" for i in range(n)]
        agent = AgentProcess(host_ns, sock, grace=0, hold_dir=hold_dir)
        stack.callback(agent.stop)
        stack.callback(_release, hold_dir, cids[:held])
        _hold(hold_dir, cids[:held])
        with ThreadPoolExecutor(n) as pool:
            futures = _start_adds(pool, host_ns, shims, conf, list(zip(cids, nss, strict=True)))
            assert wait_for(lambda: all((hold_dir / f"{c}.held").exists() for c in cids[:held]),
                            timeout=120)
            _cut_off(agent)
            _release(hold_dir, cids[:held])
            results = [f.result() for f in futures]
        assert agent.wait() == 1
        failed = []
        for i, r in enumerate(results):
            if r.status != 0:
                assert r.json["code"] == 11, r.stdout
                assert r.json["cniVersion"] == "1.0.0"
                failed.append(i)
        assert set(range(held)) <= set(failed)  # the held calls were cut off
        ok_ips = [pod_ip(r) for r in results if r.status == 0]
        # Nothing half-configured, before any clean-up by the runtime.
        assert reserved(tmp_path) == sorted(ok_ips)
        assert len(host_veths(host_ns)) == len(ok_ips)
        assert [pod_links(nss[i]) for i in failed] == [[] for _ in failed]
        # systemd restarts the agent; the runtime's clean-up and retries go to the new one.
        second = AgentProcess(host_ns, sock)
        stack.callback(second.stop)
        for i in failed:  # what the runtime does after a failed ADD
            call(host_ns, shims, "DEL", conf, cid=cids[i], netns=nss[i]).ok()
        for i in failed:
            pod_ip(call(host_ns, shims, "ADD", conf, cid=cids[i], netns=nss[i]))
        assert len(reserved(tmp_path)) == n
        for cid, ns in zip(cids, nss, strict=True):
            call(host_ns, shims, "DEL", conf, cid=cid, netns=ns).ok()
        assert reserved(tmp_path) == []
        assert host_veths(host_ns) == []


def test_caller_in_another_namespace_runs_the_plugin_itself(
        netns: str, shims: Path, agent: AgentProcess) -> None:
    conf = {"cniVersion": "1.0.0", "name": "pytagent", "type": "loopback"}
    env = cni_env("ADD", container_id="pytother", netns=netns, ifname="lo", path=str(shims))
    # The shim runs in the container namespace itself: the agent (in host_ns) refuses, so
    # loopback runs in the shim, exactly as without an agent.
    result = exec_plugin_in(netns, str(shims / "loopback"), env, conf).ok()
    assert result["interfaces"][0]["name"] == "lo"
    assert agent.calls() == []
    assert json.dumps(result)
