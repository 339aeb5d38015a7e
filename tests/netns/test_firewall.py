"""firewall behind the Go bridge: forward rules and ingress policies with real pings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from meta_pods import bridge_pod, chained, ours, pod_ip, theirs

from pycni.testing import call_plugin, cni_env, ns_run, pings, temp_netns, unique_name

pytestmark = pytest.mark.netns

BACKENDS = ["iptables", "nftables"]


def _fw(tmp_path: Path, backend: str, **keys: Any) -> dict[str, Any]:
    return {"type": "firewall", "backend": backend, "dataDir": str(tmp_path / "fw"), **keys}


def _ruleset(host_ns: str, backend: str) -> str:
    if backend == "iptables":
        return ns_run(host_ns, "iptables-save", "-t", "filter", check=True).stdout
    return ns_run(host_ns, "nft", "list", "ruleset", check=True).stdout


def _filter_rules(host_ns: str) -> list[str]:
    """iptables-save lines of the filter table without counters or headers."""
    return sorted(line for line in _ruleset(host_ns, "iptables").splitlines()
                  if line.startswith(("-A", ":CNI")))


@pytest.fixture
def two_bridges(host_ns: str, tmp_path: Path, go_plugins: str
                ) -> Any:
    """Pods a1, a2 on one bridge and b1 on another, each in its own namespace."""
    br_a, br_b = unique_name("br"), unique_name("br")
    with temp_netns("c") as na1, temp_netns("c") as na2, temp_netns("c") as nb1:
        pods = {
            "a1": (na1, bridge_pod(host_ns, na1, tmp_path, bridge=br_a, subnet="10.81.0.0/24",
                                   cid="a1")),
            "a2": (na2, bridge_pod(host_ns, na2, tmp_path, bridge=br_a, subnet="10.81.0.0/24",
                                   cid="a2")),
            "b1": (nb1, bridge_pod(host_ns, nb1, tmp_path, bridge=br_b, subnet="10.82.0.0/24",
                                   cid="b1", name="pytnetb")),
        }
        yield pods


def _add(host_ns: str, tmp_path: Path, pods: dict[str, Any], name: str, backend: str,
         **keys: Any) -> dict[str, Any]:
    netns, result = pods[name]
    conf = chained(_fw(tmp_path, backend, **keys), result)
    ours(host_ns, "firewall", "ADD", conf, cid=name, netns=netns)
    return conf


@pytest.mark.parametrize("backend", BACKENDS)
def test_open_policy_rules_added_and_removed(host_ns: str, tmp_path: Path, two_bridges: Any,
                                             backend: str) -> None:
    conf = _add(host_ns, tmp_path, two_bridges, "a1", backend)
    ip = pod_ip(two_bridges["a1"][1])
    rules = _ruleset(host_ns, backend)
    assert ip in rules
    if backend == "iptables":
        assert "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD" \
            in rules
        assert "-j CNI-ADMIN" in rules
    assert pings(two_bridges["b1"][0], ip)
    netns = two_bridges["a1"][0]
    check = call_plugin(host_ns, "firewall", cni_env("CHECK", container_id="a1", netns=netns),
                        conf)
    assert check.status == 0, check.stdout
    assert (tmp_path / "fw" / "pytnet").is_dir()
    ours(host_ns, "firewall", "DEL", conf, cid="a1", netns=netns)
    assert ip not in _ruleset(host_ns, backend)
    assert list((tmp_path / "fw").iterdir()) == []  # no empty per-network directory left
    check = call_plugin(host_ns, "firewall", cni_env("CHECK", container_id="a1", netns=netns),
                        conf)
    assert check.status == 1
    ours(host_ns, "firewall", "DEL", conf, cid="a1", netns=netns)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_bridge_policy(host_ns: str, tmp_path: Path, two_bridges: Any,
                            backend: str) -> None:
    for name in ("a1", "a2", "b1"):
        _add(host_ns, tmp_path, two_bridges, name, backend, ingressPolicy="same-bridge")
    a1, a2, b1 = (two_bridges[n] for n in ("a1", "a2", "b1"))
    assert pings(a1[0], pod_ip(a2[1]))  # same bridge: allowed
    assert not pings(a1[0], pod_ip(b1[1]))  # across bridges: dropped both ways
    assert not pings(b1[0], pod_ip(a1[1]))
    if backend == "iptables":
        assert "CNI-ISOLATION-STAGE-2" in _ruleset(host_ns, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_isolated_policy(host_ns: str, tmp_path: Path, two_bridges: Any, backend: str) -> None:
    conf = _add(host_ns, tmp_path, two_bridges, "a1", backend, ingressPolicy="isolated")
    a1, a2, b1 = (two_bridges[n] for n in ("a1", "a2", "b1"))
    assert not pings(a2[0], pod_ip(a1[1]))  # same bridge, new connection: dropped
    assert not pings(b1[0], pod_ip(a1[1]))  # routed, new connection: dropped
    assert pings(a1[0], pod_ip(a2[1]))  # a1's own connections get their replies
    assert pings(a1[0], pod_ip(b1[1]))
    ours(host_ns, "firewall", "DEL", conf, cid="a1", netns=a1[0])
    assert pings(a2[0], pod_ip(a1[1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gc_removes_rules_of_stale_attachments(host_ns: str, tmp_path: Path, two_bridges: Any,
                                               backend: str) -> None:
    _add(host_ns, tmp_path, two_bridges, "a1", backend)
    _add(host_ns, tmp_path, two_bridges, "a2", backend)
    gc = {"cniVersion": "1.1.0", "name": "pytnet", **_fw(tmp_path, backend),
          "cni.dev/valid-attachments": [{"containerID": "a1", "ifname": "eth0"}]}
    assert call_plugin(host_ns, "firewall", cni_env("GC"), gc).status == 0
    rules = _ruleset(host_ns, backend)
    assert pod_ip(two_bridges["a1"][1]) in rules
    assert pod_ip(two_bridges["a2"][1]) not in rules
    assert [p.name for p in (tmp_path / "fw" / "pytnet").iterdir()] == ["a1_eth0.json"]
    gc["cni.dev/valid-attachments"] = []
    assert call_plugin(host_ns, "firewall", cni_env("GC"), gc).status == 0
    assert pod_ip(two_bridges["a1"][1]) not in _ruleset(host_ns, backend)
    assert list((tmp_path / "fw").iterdir()) == []


def test_iptables_rules_match_reference(tmp_path: Path, go_plugins: str) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "pytbr0"}],
            "ips": [{"address": "10.83.0.5/24", "interface": 0},
                    {"address": "fd83::5/64", "interface": 0}]}
    conf = chained({"type": "firewall", "backend": "iptables",
                    "iptablesAdminChainName": "CNI-PYT-ADMIN",
                    "dataDir": str(tmp_path / "fw")}, prev)
    go_conf = {k: v for k, v in conf.items() if k != "dataDir"}
    with temp_netns("h") as h1, temp_netns("h") as h2, temp_netns("c") as c:
        ours(h1, "firewall", "ADD", conf, cid="x", netns=c)
        theirs(h2, "firewall", "ADD", go_conf, cid="x", netns=c)
        assert _filter_rules(h1) == _filter_rules(h2)
        v6 = [ns_run(h, "ip6tables-save", "-t", "filter", check=True).stdout for h in (h1, h2)]
        assert "fd83::5/128" in v6[0]
        assert sorted(v6[0].splitlines()[2:-2]) == sorted(v6[1].splitlines()[2:-2])
        ours(h1, "firewall", "DEL", conf, cid="x", netns=c)
        theirs(h2, "firewall", "DEL", go_conf, cid="x", netns=c)
        assert _filter_rules(h1) == _filter_rules(h2)


@pytest.mark.parametrize(("keys", "code"), [
    ({"backend": "firewalld"}, 7),
    ({"backend": "pf"}, 7),
    ({"backend": "nftables", "iptablesAdminChainName": "X"}, 7),
    ({"ingressPolicy": "closed"}, 7),
])
def test_bad_config(host_ns: str, tmp_path: Path, keys: dict[str, str], code: int) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "br"}],
            "ips": [{"address": "10.83.0.5/24"}]}
    conf = chained({"type": "firewall", "dataDir": str(tmp_path), **keys}, prev)
    call = call_plugin(host_ns, "firewall", cni_env("ADD", container_id="x", netns=host_ns),
                       conf)
    assert call.status == 1
    assert call.json["code"] == code


def test_status(host_ns: str) -> None:
    conf = {"cniVersion": "1.1.0", "name": "pytnet", "type": "firewall", "backend": "nftables"}
    assert call_plugin(host_ns, "firewall", cni_env("STATUS"), conf).status == 0
