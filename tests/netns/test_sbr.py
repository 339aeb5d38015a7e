"""sbr behind the Go bridge: rules and tables in the container, against the reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from meta_pods import bridge_pod, chained, ours, pod_ip, theirs

from pycni.testing import call_plugin, cni_env, ns_run, unique_name

pytestmark = pytest.mark.netns


def _rules(netns: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = json.loads(ns_run(netns, "ip", "-j", "-4", "rule", "show",
                                                    check=True).stdout)
    # ``ip -j`` leaves out srclen for a single host (/32).
    return [{"src": r["src"], "table": r["table"]} for r in rules
            if r.get("src") not in (None, "all") and r.get("srclen", 32) == 32]


def _routes(netns: str, table: str) -> list[str]:
    out = json.loads(ns_run(netns, "ip", "-j", "-4", "route", "show", "table", table,
                            check=True).stdout)
    return sorted(f"{r['dst']} via {r.get('gateway', '-')} dev {r['dev']}" for r in out)


@pytest.fixture
def pod(host_ns: str, netns: str, tmp_path: Path, go_plugins: str) -> dict[str, Any]:
    return bridge_pod(host_ns, netns, tmp_path, bridge=unique_name("br"), subnet="10.85.0.0/24",
                      cid="s1")


def test_rule_and_table_created_and_removed(host_ns: str, netns: str,
                                            pod: dict[str, Any]) -> None:
    conf = chained({"type": "sbr"}, pod)
    out = ours(host_ns, "sbr", "ADD", conf, cid="s1", netns=netns)
    assert out == pod
    ip = pod_ip(pod)
    assert _rules(netns) == [{"src": ip, "table": "100"}]
    assert _routes(netns, "100") == ["10.85.0.0/24 via - dev eth0",
                                     "default via 10.85.0.1 dev eth0"]
    assert _routes(netns, "main") == []
    # The source-routed path works: the gateway answers a ping from the pod's address.
    assert ns_run(netns, "ping", "-c", "1", "-W", "1", "-I", ip, "10.85.0.1").returncode == 0
    assert call_plugin(host_ns, "sbr", cni_env("CHECK", container_id="s1", netns=netns),
                       conf).status == 0
    ours(host_ns, "sbr", "DEL", conf, cid="s1", netns=netns)
    assert _rules(netns) == []
    assert _routes(netns, "100") == []
    ours(host_ns, "sbr", "DEL", conf, cid="s1", netns=netns)


def test_first_free_table_and_explicit_table(host_ns: str, netns: str,
                                             pod: dict[str, Any]) -> None:
    ns_run(netns, "ip", "rule", "add", "from", "192.0.2.1", "lookup", "100", check=True)
    ns_run(netns, "ip", "route", "add", "192.0.2.0/24", "dev", "eth0", "table", "101", check=True)
    ours(host_ns, "sbr", "ADD", chained({"type": "sbr"}, pod), cid="s1", netns=netns)
    assert {"src": pod_ip(pod), "table": "102"} in _rules(netns)
    ours(host_ns, "sbr", "DEL", chained({"type": "sbr"}, pod), cid="s1", netns=netns)
    # DEL leaves the moved routes gone, as the reference does; put them back for round two.
    ns_run(netns, "ip", "route", "add", "10.85.0.0/24", "dev", "eth0", check=True)
    ns_run(netns, "ip", "route", "add", "default", "via", "10.85.0.1", "dev", "eth0",
           check=True)
    ours(host_ns, "sbr", "ADD", chained({"type": "sbr", "table": 500}, pod), cid="s1",
         netns=netns)
    assert {"src": pod_ip(pod), "table": "500"} in _rules(netns)
    assert "default via 10.85.0.1 dev eth0" in _routes(netns, "500")


def test_matches_reference(host_ns: str, netns: str, netns2: str, pod: dict[str, Any],
                           tmp_path: Path) -> None:
    other = bridge_pod(host_ns, netns2, tmp_path, bridge=unique_name("br"),
                       subnet="10.85.0.0/24", cid="s2")
    ours(host_ns, "sbr", "ADD", chained({"type": "sbr"}, pod), cid="s1", netns=netns)
    theirs(host_ns, "sbr", "ADD", chained({"type": "sbr"}, other), cid="s2", netns=netns2)
    mine, ref = _rules(netns), _rules(netns2)
    assert [r["table"] for r in mine] == [r["table"] for r in ref]
    for table in ("100", "main"):
        assert _routes(netns, table) == _routes(netns2, table)


def test_without_prev_result_fails(host_ns: str, netns: str) -> None:
    call = call_plugin(host_ns, "sbr", cni_env("ADD", container_id="s1", netns=netns),
                       chained({"type": "sbr"}, None))
    assert call.status == 1
    assert call.json["code"] == 7


def test_del_when_netns_is_gone(host_ns: str) -> None:
    ours(host_ns, "sbr", "DEL", chained({"type": "sbr"}, None), cid="s1",
         netns="/run/netns/pyt-gone")


def test_vrf_interaction() -> None:
    pytest.skip("vrf kernel module missing")


def _rule_priorities(netns: str) -> list[int]:
    rules = json.loads(ns_run(netns, "ip", "-j", "rule", "show", check=True).stdout)
    return [int(r["priority"]) for r in rules if r.get("src") not in (None, "all")]


def test_rule_priority_matches_reference(host_ns: str, netns: str, netns2: str,
                                         pod: dict[str, Any], tmp_path: Path) -> None:
    # The reference sends no priority: the kernel puts the rule just before the second
    # rule of the list (``from all lookup main``, 32766), so 32765, then 32764, ...
    other = bridge_pod(host_ns, netns2, tmp_path, bridge=unique_name("br"),
                       subnet="10.85.0.0/24", cid="s2")
    ours(host_ns, "sbr", "ADD", chained({"type": "sbr"}, pod), cid="s1", netns=netns)
    theirs(host_ns, "sbr", "ADD", chained({"type": "sbr"}, other), cid="s2", netns=netns2)
    assert _rule_priorities(netns) == _rule_priorities(netns2) == [32765]


@pytest.mark.parametrize("table", [None, 500])
def test_chain_check_after_sbr_moved_the_routes(host_ns: str, netns: str, tmp_path: Path,
                                                go_plugins: str, table: int | None) -> None:
    # The whole chain's CHECK (bridge, then sbr) right after its ADD: the bridge's routes
    # now live in sbr's table, behind a rule for the pod's address.
    bridge = unique_name("br")
    main = {"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge", "bridge": bridge,
            "isGateway": True,
            "ipam": {"type": "host-local", "subnet": "10.86.0.0/24",
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16"}],
                     "dataDir": str(tmp_path / "ipam")}}
    pod = ours(host_ns, "bridge", "ADD", main, cid="s1", netns=netns)
    sbr = chained({"type": "sbr"} if table is None else {"type": "sbr", "table": table}, pod)
    ours(host_ns, "sbr", "ADD", sbr, cid="s1", netns=netns)
    assert _routes(netns, "main") == []
    env = cni_env("CHECK", container_id="s1", netns=netns)
    check = call_plugin(host_ns, "bridge", env, {**main, "prevResult": pod})
    assert check.status == 0, check.stdout
    assert call_plugin(host_ns, "sbr", env, sbr).status == 0


def test_ptp_check_after_sbr(host_ns: str, netns: str, tmp_path: Path, go_plugins: str
                             ) -> None:
    main = {"cniVersion": "1.0.0", "name": "pytnet", "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.87.0.0/24",
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp_path / "ipam")}}
    pod = ours(host_ns, "ptp", "ADD", main, cid="s1", netns=netns)
    ours(host_ns, "sbr", "ADD", chained({"type": "sbr"}, pod), cid="s1", netns=netns)
    env = cni_env("CHECK", container_id="s1", netns=netns)
    check = call_plugin(host_ns, "ptp", env, {**main, "prevResult": pod})
    assert check.status == 0, check.stdout
