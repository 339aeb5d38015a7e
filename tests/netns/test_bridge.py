"""The bridge plugin in real namespaces: every config key, rollback, DEL, CHECK, STATUS, GC.

The plugin runs in a test "host" namespace (fixture ``host_ns``); IPAM is host-local with
its store under tmp_path, delegated through CNI_PATH=/usr/lib/cni (the Go host-local) unless
a test needs pycni's own (STATUS and GC need spec 1.1.0, which the Go one lacks).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from pycni.daemon import interpreter, shim_script
from pycni.spec import SUPPORTED_VERSIONS
from pycni.testing import (
    call_plugin,
    cni_env,
    exec_plugin_in,
    ip_json,
    ns_run,
    pings,
    temp_netns,
    unique_name,
)

pytestmark = pytest.mark.netns

V4 = "10.77.0.0/24"
V6 = "fd77::/64"


def conf(tmp_path: Path, bridge: str, *, version: str = "1.0.0", v6: bool = True,
         **keys: Any) -> dict[str, Any]:
    """A bridge config with host-local IPAM in tmp_path (``ipam=None`` for L2 only)."""
    ranges = [[{"subnet": V4}]] + ([[{"subnet": V6}]] if v6 else [])
    out: dict[str, Any] = {"cniVersion": version, "name": "pytnet", "type": "bridge",
                           "bridge": bridge,
                           "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                                    "ranges": ranges}}
    out.update(keys)
    if out["ipam"] is None:
        del out["ipam"]
    return out


def add(host_ns: str, netns: str, config: dict[str, Any], cid: str = "c1", *,
        args: str = "", path: str = "/usr/lib/cni") -> Any:
    env = cni_env("ADD", container_id=cid, netns=netns, args=args, path=path)
    return call_plugin(host_ns, "bridge", env, config)


def delete(host_ns: str, netns: str, config: dict[str, Any], cid: str = "c1",
           path: str = "/usr/lib/cni") -> Any:
    return call_plugin(host_ns, "bridge", cni_env("DEL", container_id=cid, netns=netns,
                                                  path=path), config)


def link(netns: str, name: str) -> dict[str, Any]:
    found = ip_json(netns, "-d", "link", "show", "dev", name)
    return found[0]  # type: ignore[no-any-return]


def links(netns: str) -> list[str]:
    return [x["ifname"] for x in ip_json(netns, "link", "show")]


def addrs(netns: str, name: str) -> set[str]:
    info = ip_json(netns, "addr", "show", "dev", name)[0]
    return {f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"]
            if a.get("scope") != "link"}


def sysctl(netns: str, name: str) -> str:
    return ns_run(netns, "cat", f"/proc/sys/{name}", check=True).stdout.strip()


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pytnet"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


def nat_rules(netns: str) -> str:
    return ns_run(netns, "iptables-save", "-t", "nat").stdout + \
        ns_run(netns, "ip6tables-save", "-t", "nat").stdout


@pytest.fixture
def bridge() -> str:
    return unique_name("br")


@pytest.mark.parametrize("version", [v for v in SUPPORTED_VERSIONS if v >= "0.3.0"])
def test_add_default_gateway_dual_stack(host_ns: str, netns: str, tmp_path: Path,
                                        bridge: str, version: str) -> None:
    # The Go host-local stops at spec 1.0.0; an empty CNI_PATH selects pycni's in-process.
    path = "/usr/lib/cni"
    if version == "1.1.0":
        path = str(tmp_path / "empty-cni-path")
        Path(path).mkdir()
    out = add(host_ns, netns, conf(tmp_path, bridge, version=version,
                                   isDefaultGateway=True), path=path).ok()
    assert out["cniVersion"] == version
    names = [i["name"] for i in out["interfaces"]]
    assert names[0] == bridge
    assert names[1].startswith("veth")
    assert len(names[1]) == 12
    assert names[2] == "eth0"
    assert out["interfaces"][2]["sandbox"] == netns
    assert [(ip["address"], ip.get("gateway"), ip["interface"]) for ip in out["ips"]] == [
        ("10.77.0.2/24", "10.77.0.1", 2), ("fd77::2/64", "fd77::1", 2)]
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"},
                             {"dst": "::/0", "gw": "fd77::1"}]
    assert addrs(host_ns, bridge) == {"10.77.0.1/24", "fd77::1/64"}
    assert addrs(netns, "eth0") == {"10.77.0.2/24", "fd77::2/64"}
    host_veth = link(host_ns, names[1])
    assert host_veth["master"] == bridge
    assert host_veth.get("txqlen", 0) == 0
    assert out["interfaces"][1]["mac"] == host_veth["address"]
    assert out["interfaces"][0]["mac"] == link(host_ns, bridge)["address"]
    assert sysctl(host_ns, "net/ipv4/ip_forward") == "1"
    assert sysctl(host_ns, "net/ipv6/conf/all/forwarding") == "1"
    assert sysctl(host_ns, f"net/ipv6/conf/{bridge}/accept_ra") == "0"
    assert sysctl(host_ns, f"net/ipv6/conf/{names[1]}/accept_ra") == "0"
    assert sysctl(netns, "net/ipv6/conf/eth0/accept_dad") == "0"
    assert sysctl(netns, "net/ipv4/conf/eth0/arp_notify") == "1"
    default = list(ip_json(netns, "route", "show", "default"))
    assert default[0]["gateway"] == "10.77.0.1"
    assert delete(host_ns, netns, conf(tmp_path, bridge, version=version), path=path).ok() is None


def test_two_containers_ping_each_other_and_gateway(host_ns: str, netns: str, netns2: str,
                                                    tmp_path: Path, bridge: str) -> None:
    config = conf(tmp_path, bridge, isGateway=True)
    add(host_ns, netns, config, "c1").ok()
    add(host_ns, netns2, config, "c2").ok()
    for target in ("10.77.0.1", "10.77.0.3", "fd77::1", "fd77::3"):
        assert pings(netns, target, timeout=10), f"c1 cannot reach {target}"
    assert pings(netns2, "10.77.0.2", timeout=10)
    assert pings(host_ns, "10.77.0.3", timeout=10)


def test_l2_only(host_ns: str, netns: str, tmp_path: Path, bridge: str) -> None:
    for ipam in (None, {}):
        config = conf(tmp_path, bridge, ipam=ipam)
        out = add(host_ns, netns, config).ok()
        assert "ips" not in out
        assert "UP" in link(netns, "eth0")["flags"]
        assert addrs(netns, "eth0") == set()
        assert addrs(host_ns, bridge) == set()
        assert delete(host_ns, netns, config).status == 0
        assert "eth0" not in links(netns)


def test_disable_container_interface(host_ns: str, netns: str, tmp_path: Path,
                                     bridge: str) -> None:
    config = conf(tmp_path, bridge, ipam=None, disableContainerInterface=True)
    out = add(host_ns, netns, config).ok()
    assert "UP" not in link(netns, "eth0")["flags"]
    assert link(host_ns, out["interfaces"][1]["name"])["master"] == bridge
    bad = add(host_ns, netns, conf(tmp_path, bridge, disableContainerInterface=True), "c2")
    assert bad.status == 1
    assert bad.json["code"] == 7


def test_hairpin_promisc_isolation_mtu(host_ns: str, netns: str, tmp_path: Path,
                                       bridge: str) -> None:
    out = add(host_ns, netns, conf(tmp_path, bridge, hairpinMode=True, portIsolation=True,
                                   mtu=1400)).ok()
    port = link(host_ns, out["interfaces"][1]["name"])
    assert port["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert port["linkinfo"]["info_slave_data"]["isolated"] is True
    assert port["mtu"] == 1400
    assert link(netns, "eth0")["mtu"] == 1400
    assert link(host_ns, bridge)["mtu"] == 1400
    both = add(host_ns, netns, conf(tmp_path, bridge, hairpinMode=True, promiscMode=True), "c2")
    assert both.json["code"] == 7


def test_promisc_mode(host_ns: str, netns: str, tmp_path: Path, bridge: str) -> None:
    add(host_ns, netns, conf(tmp_path, bridge, promiscMode=True)).ok()
    assert "PROMISC" in link(host_ns, bridge)["flags"]


def test_port_isolation_blocks_container_to_container(host_ns: str, netns: str, netns2: str,
                                                      tmp_path: Path, bridge: str) -> None:
    config = conf(tmp_path, bridge, v6=False, isGateway=True, portIsolation=True)
    add(host_ns, netns, config, "c1").ok()
    add(host_ns, netns2, config, "c2").ok()
    assert pings(netns, "10.77.0.1", timeout=10)
    assert not pings(netns, "10.77.0.3")


@pytest.mark.parametrize("case", [
    ("runtimeConfig", "0a:00:00:00:00:01"),
    ("args", "0a:00:00:00:00:02"),
    ("env", "0a:00:00:00:00:03"),
])
def test_mac_sources_and_precedence(host_ns: str, netns: str, tmp_path: Path, bridge: str,
                                    case: tuple[str, str]) -> None:
    where, expect = case
    config = conf(tmp_path, bridge)
    env_args = "IgnoreUnknown=1;MAC=0a:00:00:00:00:03;K8S_POD_NAME=x"
    if where in ("runtimeConfig", "args"):
        config["args"] = {"cni": {"mac": "0a:00:00:00:00:02"}}
    if where == "runtimeConfig":
        config["runtimeConfig"] = {"mac": "0a:00:00:00:00:01"}
    out = add(host_ns, netns, config, args=env_args).ok()
    assert out["interfaces"][2]["mac"] == expect
    assert link(netns, "eth0")["address"] == expect


def test_invalid_mac_is_a_config_error(host_ns: str, netns: str, tmp_path: Path,
                                       bridge: str) -> None:
    config = conf(tmp_path, bridge, runtimeConfig={"mac": "not-a-mac"})
    assert add(host_ns, netns, config).json["code"] == 7


def test_gateway_address_conflict_and_force_address(host_ns: str, netns: str, netns2: str,
                                                    tmp_path: Path, bridge: str) -> None:
    add(host_ns, netns, conf(tmp_path, bridge, v6=False, isGateway=True)).ok()
    other = conf(tmp_path / "b", bridge, v6=False, isGateway=True)
    other["ipam"]["ranges"] = [[{"subnet": "10.78.0.0/24"}]]
    failed = add(host_ns, netns2, other, "c2")
    assert failed.json["code"] == 100
    assert "has 10.77.0.1/24, config wants 10.78.0.1/24 (set forceAddress" in failed.json["msg"]
    assert "eth0" not in links(netns2)
    other["forceAddress"] = True
    add(host_ns, netns2, other, "c2").ok()
    assert addrs(host_ns, bridge) == {"10.78.0.1/24"}


def test_no_gateway_without_is_gateway(host_ns: str, netns: str, tmp_path: Path,
                                       bridge: str) -> None:
    out = add(host_ns, netns, conf(tmp_path, bridge)).ok()
    assert "routes" not in out
    assert addrs(host_ns, bridge) == set()
    assert ip_json(netns, "route", "show", "default") == []


def test_enabledad(host_ns: str, netns: str, tmp_path: Path, bridge: str) -> None:
    add(host_ns, netns, conf(tmp_path, bridge, enabledad=True)).ok()
    assert sysctl(netns, "net/ipv6/conf/eth0/accept_dad") == "1"
    assert sysctl(netns, "net/ipv6/conf/eth0/enhanced_dad") == "1"


def test_macspoofchk(host_ns: str, netns: str, tmp_path: Path, bridge: str) -> None:
    config = conf(tmp_path, bridge, v6=False, isGateway=True, macspoofchk=True)
    out = add(host_ns, netns, config).ok()
    rules = ns_run(host_ns, "nft", "list", "table", "bridge", "nat").stdout
    assert f'iifname "{out["interfaces"][1]["name"]}" jump cni-br-iface-c1-eth0' in rules
    assert out["interfaces"][2]["mac"] in rules
    assert pings(netns, "10.77.0.1", timeout=10)
    # A frame with another source MAC is dropped at the bridge port.
    ns_run(netns, "ip", "neigh", "flush", "all", check=True)
    ns_run(netns, "ip", "link", "set", "eth0", "address", "0a:bb:bb:bb:bb:bb", check=True)
    assert not pings(netns, "10.77.0.1")
    delete(host_ns, netns, config).ok()
    assert "cni-br-iface-c1-eth0" not in ns_run(host_ns, "nft", "list", "ruleset").stdout


def _spoof_rules(host_ns: str) -> list[dict[str, Any]]:
    """The rules of table ``bridge nat`` (the spoof check's), as nft lists them in JSON."""
    listed = ns_run(host_ns, "nft", "-j", "list", "table", "bridge", "nat")
    if listed.returncode != 0:
        return []
    return [i["rule"] for i in json.loads(listed.stdout)["nftables"] if "rule" in i]


def test_macspoofchk_with_100_kb_container_ids(host_ns: str, netns: str, netns2: str,
                                               tmp_path: Path, bridge: str) -> None:
    # The spec sets no limit on the ID, but an nftables chain name holds 255 bytes: the
    # chains and comments take a hashed key, distinct for IDs that differ in the last byte.
    long_id = "c" + "0123456789abcdef" * 6400
    other_id = long_id[:-1] + "x"
    config = conf(tmp_path, bridge, v6=False, ipam=None, macspoofchk=True)
    for ns, cid in ((netns, long_id), (netns2, other_id)):
        add(host_ns, ns, config, cid).ok()
    rules = _spoof_rules(host_ns)
    comments = {r["comment"] for r in rules}
    assert len(comments) == 2
    assert len(rules) == 8
    assert all(len(r["chain"].encode()) <= 255 for r in rules)
    # DEL of one container leaves the other's spoof check whole.
    delete(host_ns, netns, config, long_id).ok()
    left = _spoof_rules(host_ns)
    assert len(left) == 4
    assert len({r["comment"] for r in left}) == 1
    delete(host_ns, netns2, config, other_id).ok()
    assert _spoof_rules(host_ns) == []
    assert "cni-br-iface" not in ns_run(host_ns, "nft", "list", "ruleset").stdout


def test_macspoofchk_longest_id_go_takes_has_go_layout(host_ns: str, netns: str, tmp_path: Path,
                                                       bridge: str, go_plugins: str) -> None:
    # The longest ID whose chain "cni-br-iface-<id>-eth0-mac" fits nftables' 255 bytes: the Go
    # plugin takes it, and either implementation removes what the other made.
    cid = "c" * 233
    config = conf(tmp_path, bridge, v6=False, ipam=None, macspoofchk=True)
    env = cni_env("ADD", container_id=cid, netns=netns)
    assert exec_plugin_in(host_ns, f"{go_plugins}/bridge", env, config).status == 0
    go_rules = _spoof_rules(host_ns)
    assert len(go_rules) == 4
    delete(host_ns, netns, config, cid).ok()
    assert _spoof_rules(host_ns) == []
    add(host_ns, netns, config, cid).ok()
    assert ([(r["chain"], r["comment"]) for r in _spoof_rules(host_ns)]
            == [(r["chain"], r["comment"]) for r in go_rules])
    env = cni_env("DEL", container_id=cid, netns=netns)
    assert exec_plugin_in(host_ns, f"{go_plugins}/bridge", env, config).status == 0
    assert _spoof_rules(host_ns) == []


@pytest.mark.parametrize("case", [
    ({"vlan": 5000}, "invalid VLAN ID 5000"),
    ({"vlan": -1}, "vlan"),
    ({"vlan": 10, "vlanTrunk": [{"id": 11}]}, '"vlan" and "vlanTrunk"'),
    ({"vlanTrunk": [{"minID": 20, "maxID": 10}]}, "greater than maxID"),
    ({"vlanTrunk": [{"minID": 20}]}, "maxID is missing"),
    ({"vlanTrunk": [{"id": 4095}]}, "4095"),
    ({"bridge": "a-much-too-long-bridge-name"}, "at most 15"),
    ({"ipMasqBackend": "ebtables", "ipMasq": True}, "ipMasqBackend"),
])
def test_config_errors(host_ns: str, netns: str, tmp_path: Path, bridge: str,
                       case: tuple[dict[str, Any], str]) -> None:
    keys, needle = case
    out = add(host_ns, netns, {**conf(tmp_path, bridge), **keys})
    assert out.status == 1
    assert out.json["code"] == 7
    assert needle in out.json["msg"]
    assert "eth0" not in links(netns)


@pytest.mark.parametrize("keys", [{"vlan": 100}, {"vlanTrunk": [{"minID": 10, "maxID": 12}]},
                                  {"vlan": 100, "preserveDefaultVlan": False}])
def test_vlan(host_ns: str, netns: str, tmp_path: Path, bridge: str,
              keys: dict[str, Any]) -> None:
    out = add(host_ns, netns, conf(tmp_path, bridge, **keys))
    if out.status != 0 and "CONFIG_BRIDGE_VLAN_FILTERING" in out.json["msg"]:
        # This kernel has no bridge VLAN filtering: the error says so, nothing is left.
        assert out.json["code"] == 100
        assert "eth0" not in links(netns)
        assert leases(tmp_path) == set()
        assert bridge not in links(host_ns)
        pytest.skip("kernel lacks CONFIG_BRIDGE_VLAN_FILTERING (bridge vlan_filtering)")
    out_json = out.ok()
    port = out_json["interfaces"][1]["name"]
    vlans = ns_run(host_ns, "bridge", "-j", "vlan", "show", "dev", port).stdout
    vids = {v["vlan"] for entry in json.loads(vlans) for v in entry["vlans"]}
    expected = {100} if "vlan" in keys else {10, 11, 12}
    assert expected <= vids


def test_ip_masq_and_del_with_vanished_netns(host_ns: str, tmp_path: Path,
                                             bridge: str) -> None:
    config = conf(tmp_path, bridge, isGateway=True, ipMasq=True)
    with temp_netns("c") as gone:
        add(host_ns, gone, config).ok()
        rules = nat_rules(host_ns)
        assert "10.77.0.2/32" in rules
        assert "fd77::2/128" in rules
    # The netns is gone: DEL still releases the lease and removes the rules.
    assert delete(host_ns, gone, config).status == 0
    assert 'id: \\"c1\\"' not in nat_rules(host_ns)
    assert leases(tmp_path) == set()


def test_del_twice_and_without_netns(host_ns: str, netns: str, tmp_path: Path,
                                     bridge: str) -> None:
    config = conf(tmp_path, bridge, ipMasq=True)
    add(host_ns, netns, config).ok()
    assert delete(host_ns, netns, config).status == 0
    assert delete(host_ns, netns, config).status == 0
    assert delete(host_ns, "", config).status == 0
    assert "eth0" not in links(netns)
    assert leases(tmp_path) == set()
    assert [n for n in links(host_ns) if n.startswith("veth")] == []


def test_rollback_on_exhausted_range_then_retry(host_ns: str, netns: str, netns2: str,
                                                tmp_path: Path, bridge: str) -> None:
    config = conf(tmp_path, bridge, v6=False, isGateway=True, ipMasq=True, macspoofchk=True)
    config["ipam"]["ranges"] = [[{"subnet": V4, "rangeStart": "10.77.0.9",
                                  "rangeEnd": "10.77.0.9"}]]
    add(host_ns, netns, config, "c1").ok()
    host_links = set(links(host_ns))
    failed = add(host_ns, netns2, config, "c2")
    assert failed.status == 1
    # Nothing of the failed attempt is left: no veth, no spoof-check chain, no lease.
    assert "eth0" not in links(netns2)
    assert set(links(host_ns)) == host_links
    assert "cni-br-iface-c2-eth0" not in ns_run(host_ns, "nft", "list", "ruleset").stdout
    assert leases(tmp_path) == {"10.77.0.9"}
    delete(host_ns, netns, config, "c1").ok()
    add(host_ns, netns2, config, "c2").ok()


def test_rollback_after_ipam_releases_everything(host_ns: str, netns: str, netns2: str,
                                                 tmp_path: Path, bridge: str) -> None:
    add(host_ns, netns, conf(tmp_path / "a", bridge, v6=False, isGateway=True)).ok()
    other = conf(tmp_path, bridge, v6=False, isGateway=True, ipMasq=True, macspoofchk=True)
    other["ipam"]["ranges"] = [[{"subnet": "10.78.0.0/24"}]]
    # Fails at the bridge's gateway address, after veth, spoof check, lease and container
    # addresses were all made.
    failed = add(host_ns, netns2, other, "c2")
    assert failed.json["code"] == 100
    assert "eth0" not in links(netns2)
    assert leases(tmp_path) == set()
    assert 'id: \\"c2\\"' not in nat_rules(host_ns)
    assert "cni-br-iface-c2-eth0" not in ns_run(host_ns, "nft", "list", "ruleset").stdout


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_rollback_when_the_result_cannot_be_written(host_ns: str, netns: str, tmp_path: Path,
                                                    bridge: str, version: str) -> None:
    # L2 only: no address, so no 0.1.0/0.2.0 result. The reference fails (999) and leaves
    # the veth behind; the failed ADD must undo itself like any other.
    failed = add(host_ns, netns, conf(tmp_path, bridge, version=version, ipam=None))
    assert failed.json["code"] == 1
    assert "eth0" not in links(netns)
    assert [n for n in links(host_ns) if n.startswith("veth")] == []


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_rollback_after_masquerade_removes_its_rules(host_ns: str, netns: str, tmp_path: Path,
                                                     bridge: str, backend: str, *,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A failure after the last step of ADD (the masquerade rules are written by then): the
    # masquerade undo runs with the others.
    from pycni.plugins.main import bridge as bridge_plugin
    from pycni.spec import KernelError

    def fail(*_: object) -> None:
        raise KernelError("pyt: injected failure after masquerade")

    monkeypatch.setattr(bridge_plugin, "apply_dns", fail)
    config = conf(tmp_path, bridge, isGateway=True, ipMasq=True, ipMasqBackend=backend)
    failed = add(host_ns, netns, config)
    assert failed.json["msg"] == "pyt: injected failure after masquerade"
    assert 'id: \\"c1\\"' not in nat_rules(host_ns)
    assert "net: pytnet, if: eth0, id: c1" not in ns_run(host_ns, "nft", "list",
                                                         "ruleset").stdout
    assert "eth0" not in links(netns)
    assert leases(tmp_path) == set()
    monkeypatch.undo()
    add(host_ns, netns, config).ok()  # and that masquerade is seen, so the check can fail
    assert ('id: \\"c1\\"' in nat_rules(host_ns)) == (backend == "iptables")
    assert ("net: pytnet, if: eth0, id: c1" in ns_run(host_ns, "nft", "list", "ruleset").stdout) \
        == (backend == "nftables")


def test_failed_add_keeps_a_new_bridge_another_pod_joined(host_ns: str, netns: str,
                                                         tmp_path: Path, bridge: str, *,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # ADD A creates the bridge and fails to configure it (VLAN filtering); meanwhile ADD B,
    # which found the bridge, attached its port. A must not delete the bridge under B.
    from pycni.host import _bridge
    from pycni.spec import KernelError

    other = unique_name("v")
    real = _bridge._set_vlan_filtering

    def concurrent_attach_then_fail(ipr: object, name: str) -> None:
        ns_run(host_ns, "ip", "link", "add", other, "type", "veth", "peer", "name",
               other + "p", check=True)
        ns_run(host_ns, "ip", "link", "set", other, "master", name, check=True)
        real(ipr, name)  # fails on kernels without bridge VLAN filtering
        raise KernelError("pyt: injected vlan_filtering failure")

    monkeypatch.setattr(_bridge, "_set_vlan_filtering", concurrent_attach_then_fail)
    failed = add(host_ns, netns, conf(tmp_path, bridge, vlan=100))
    assert failed.json["code"] == 100
    assert bridge in links(host_ns)
    assert link(host_ns, other)["master"] == bridge
    assert "eth0" not in links(netns)


def test_failed_add_keeps_a_vlan_gateway_another_pod_uses(host_ns: str, netns: str,
                                                         netns2: str, tmp_path: Path,
                                                         bridge: str, *,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # ADD A creates the VLAN's gateway veth <bridge>.<vlan>; ADD B finds and uses it; then A
    # fails (after masquerading, its last step). A's rollback must keep the gateway.
    from pycni.plugins.main import bridge as bridge_plugin
    from pycni.spec import KernelError

    config = conf(tmp_path, bridge, v6=False, vlan=100, isGateway=True)
    real = bridge_plugin.apply_dns
    seen: list[str] = []

    def second_pod_then_fail(args: Any, result: Any) -> None:
        if args.container_id != "a":
            real(args, result)
            return
        monkeypatch.setattr(bridge_plugin, "apply_dns", real)
        seen.append(add(host_ns, netns2, config, "b").ok()["ips"][0]["address"])
        raise KernelError("pyt: injected failure")

    monkeypatch.setattr(bridge_plugin, "apply_dns", second_pod_then_fail)
    failed = add(host_ns, netns, config, "a")
    if "CONFIG_BRIDGE_VLAN_FILTERING" in failed.json["msg"]:
        pytest.skip("kernel lacks CONFIG_BRIDGE_VLAN_FILTERING (bridge vlan_filtering)")
    assert failed.json["msg"] == "pyt: injected failure"
    assert seen == ["10.77.0.3/24"]
    assert f"{bridge}.100" in links(host_ns)
    assert "eth0" not in links(netns)
    assert pings(netns2, "10.77.0.1", wait=2)


def test_existing_non_bridge_link_is_refused(host_ns: str, netns: str, tmp_path: Path) -> None:
    name = unique_name("v")
    ns_run(host_ns, "ip", "link", "add", name, "type", "veth", "peer", "name", name + "p",
           check=True)
    out = add(host_ns, netns, conf(tmp_path, name))
    assert out.json["code"] == 100
    assert "expected a bridge" in out.json["msg"]
    status = call_plugin(host_ns, "bridge", cni_env("STATUS"),
                         conf(tmp_path, name, version="1.1.0", ipam=None))
    assert status.json["code"] == 50


def test_check(host_ns: str, netns: str, tmp_path: Path, bridge: str) -> None:
    config = conf(tmp_path, bridge, isDefaultGateway=True)
    out = add(host_ns, netns, config).ok()
    env = cni_env("CHECK", container_id="c1", netns=netns)
    checked = {**config, "prevResult": out}
    assert call_plugin(host_ns, "bridge", env, checked).status == 0
    assert call_plugin(host_ns, "bridge", env, config).json["code"] == 7  # no prevResult
    ns_run(netns, "ip", "addr", "del", "10.77.0.2/24", "dev", "eth0", check=True)
    broken = call_plugin(host_ns, "bridge", env, checked)
    assert broken.status == 1
    assert "10.77.0.2/24" in broken.json["msg"]


def test_status_and_gc(host_ns: str, netns: str, netns2: str, tmp_path: Path,
                       bridge: str) -> None:
    # STATUS and GC are spec 1.1.0: IPAM is pycni's host-local (an empty CNI_PATH).
    path = str(tmp_path / "empty-cni-path")
    Path(path).mkdir()
    config = conf(tmp_path, bridge, version="1.1.0", ipMasq=True)
    assert call_plugin(host_ns, "bridge", cni_env("STATUS", path=path), config).status == 0
    add(host_ns, netns, config, "c1", path=path).ok()
    add(host_ns, netns2, config, "c2", path=path).ok()
    assert len(leases(tmp_path)) == 4
    gc = {**config, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}
    assert call_plugin(host_ns, "bridge", cni_env("GC", path=path), gc).status == 0
    assert leases(tmp_path) == {"10.77.0.2", "fd77::2"}
    rules = nat_rules(host_ns)
    assert 'id: \\"c1\\"' in rules
    assert 'id: \\"c2\\"' not in rules


def test_as_executable(host_ns: str, netns: str, tmp_path: Path, bridge: str) -> None:
    exe = tmp_path / "bin" / "bridge"
    exe.parent.mkdir()
    exe.write_text(shim_script("bridge", interpreter()))
    exe.chmod(0o755)
    config = conf(tmp_path, bridge, isGateway=True)
    env = cni_env("ADD", container_id="c1", netns=netns)
    out = exec_plugin_in(host_ns, str(exe), env, config).ok()
    assert out["ips"][0]["address"] == "10.77.0.2/24"
    assert ipaddress.ip_interface(out["ips"][1]["address"]).version == 6
    env["CNI_COMMAND"] = "DEL"
    assert exec_plugin_in(host_ns, str(exe), env, config).status == 0
    assert "eth0" not in links(netns)
