"""The ptp plugin in real namespaces: routing layout, masquerade, rollback, DEL, CHECK, GC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.testing import call_plugin, cni_env, ip_json, ns_run, pings, temp_netns

pytestmark = pytest.mark.netns


def conf(tmp_path: Path, *, version: str = "1.0.0", **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cniVersion": version, "name": "pytptp", "type": "ptp",
        "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                 "ranges": [[{"subnet": "10.66.0.0/24"}], [{"subnet": "fd66::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]},
    }
    out.update(keys)
    return out


def call(command: str, host_ns: str, netns: str, config: dict[str, Any], cid: str = "c1", *,
         path: str = "/usr/lib/cni") -> Any:
    env = cni_env(command, container_id=cid, netns=netns, path=path)
    return call_plugin(host_ns, "ptp", env, config)


def routes(netns: str, family: str) -> set[tuple[str, str | None, str | None]]:
    return {(r["dst"], r.get("gateway"), r.get("scope"))
            for r in ip_json(netns, family, "route", "show", "table", "main")
            if not r["dst"].startswith(("fe80", "ff00"))}


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pytptp"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


def test_add_sets_up_point_to_point_routing(host_ns: str, netns: str, netns2: str,
                                            tmp_path: Path) -> None:
    config = conf(tmp_path, mtu=1400)
    out = call("ADD", host_ns, netns, config).ok()
    host_veth = out["interfaces"][0]["name"]
    assert host_veth.startswith("veth")
    assert out["interfaces"][1] == {"name": "eth0", "mac": out["interfaces"][1]["mac"],
                                    "sandbox": netns}
    assert [(ip["address"], ip["gateway"], ip["interface"]) for ip in out["ips"]] == [
        ("10.66.0.2/24", "10.66.0.1", 1), ("fd66::2/64", "fd66::1", 1)]
    assert routes(netns, "-4") == {("10.66.0.1", None, "link"),
                                   ("10.66.0.0/24", "10.66.0.1", None),
                                   ("default", "10.66.0.1", None)}
    assert routes(netns, "-6") == {("fd66::1", None, None), ("fd66::/64", "fd66::1", None),
                                   ("default", "fd66::1", None)}
    host_addrs = {f"{a['local']}/{a['prefixlen']}"
                  for a in ip_json(host_ns, "addr", "show", "dev", host_veth)[0]["addr_info"]
                  if a.get("scope") != "link"}
    assert host_addrs == {"10.66.0.1/32", "fd66::1/128"}
    assert ("10.66.0.2", None, "host") in routes(host_ns, "-4")
    link = ip_json(host_ns, "link", "show", "dev", host_veth)[0]
    assert link["mtu"] == 1400
    assert link.get("txqlen", 0) == 0
    assert ns_run(host_ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert pings(netns, "10.66.0.1", timeout=10)
    assert pings(netns, "fd66::1", timeout=10)
    call("ADD", host_ns, netns2, config, "c2").ok()
    assert pings(netns, "10.66.0.3", timeout=10)  # routed through the host
    assert pings(netns, "fd66::3", timeout=10)


def test_dns_from_config_wins(host_ns: str, netns: str, tmp_path: Path) -> None:
    dns = {"nameservers": ["10.66.0.1"], "search": ["example.test"]}
    out = call("ADD", host_ns, netns, conf(tmp_path, dns=dns)).ok()
    assert out["dns"] == dns


def test_ip_masq_removed_on_del_even_without_netns(host_ns: str, tmp_path: Path) -> None:
    config = conf(tmp_path, ipMasq=True)
    with temp_netns("c") as gone:
        call("ADD", host_ns, gone, config).ok()
        assert "10.66.0.2/32" in ns_run(host_ns, "iptables-save", "-t", "nat").stdout
    assert call("DEL", host_ns, gone, config).status == 0
    assert 'id: \\"c1\\"' not in ns_run(host_ns, "iptables-save", "-t", "nat").stdout
    assert leases(tmp_path) == set()


def test_del_is_idempotent(host_ns: str, netns: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    call("ADD", host_ns, netns, config).ok()
    for _ in range(2):
        assert call("DEL", host_ns, netns, config).status == 0
    assert call("DEL", host_ns, "", config).status == 0
    assert [x["ifname"] for x in ip_json(netns, "link", "show")] == ["lo"]
    assert [x["ifname"] for x in ip_json(host_ns, "link", "show")] == ["lo"]


def test_rollback_when_the_interface_exists(host_ns: str, netns: str, tmp_path: Path) -> None:
    # A leftover eth0 in the container makes ADD fail after IPAM: the lease is released.
    ns_run(netns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "pytpeer",
           check=True)
    config = conf(tmp_path, ipMasq=True)
    failed = call("ADD", host_ns, netns, config)
    assert failed.json["code"] == 100
    assert "already exists" in failed.json["msg"]
    assert leases(tmp_path) == set()
    assert 'id: \\"c1\\"' not in ns_run(host_ns, "iptables-save", "-t", "nat").stdout
    ns_run(netns, "ip", "link", "del", "eth0", check=True)
    call("ADD", host_ns, netns, config).ok()


def test_rollback_after_veth_creation(host_ns: str, netns: str, tmp_path: Path) -> None:
    # static IPAM without a gateway: ptp cannot route it and fails after making the veth.
    config = conf(tmp_path)
    config["ipam"] = {"type": "static", "addresses": [{"address": "10.66.0.9/24"}]}
    failed = call("ADD", host_ns, netns, config)
    assert failed.status == 1
    assert "gateway" in failed.json["msg"]
    assert [x["ifname"] for x in ip_json(netns, "link", "show")] == ["lo"]
    assert [x["ifname"] for x in ip_json(host_ns, "link", "show")] == ["lo"]


def test_rollback_on_exhausted_range(host_ns: str, netns: str, netns2: str,
                                     tmp_path: Path) -> None:
    config = conf(tmp_path)
    config["ipam"]["ranges"] = [[{"subnet": "10.66.0.0/24", "rangeStart": "10.66.0.7",
                                  "rangeEnd": "10.66.0.7"}]]
    call("ADD", host_ns, netns, config).ok()
    assert call("ADD", host_ns, netns2, config, "c2").status == 1
    assert [x["ifname"] for x in ip_json(netns2, "link", "show")] == ["lo"]
    call("DEL", host_ns, netns, config).ok()
    call("ADD", host_ns, netns2, config, "c2").ok()


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_rollback_after_masquerade_removes_its_rules(host_ns: str, netns: str, tmp_path: Path,
                                                     backend: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Fail after the masquerade step, the last of ADD: its undo must run too.
    from pycni.plugins.main import ptp as ptp_plugin
    from pycni.spec import KernelError

    def fail(*_: object) -> None:
        raise KernelError("pyt: injected failure after masquerade")

    def masq_rules() -> str:
        return ns_run(host_ns, "iptables-save", "-t", "nat").stdout + \
            ns_run(host_ns, "ip6tables-save", "-t", "nat").stdout + \
            ns_run(host_ns, "nft", "list", "ruleset").stdout

    monkeypatch.setattr(ptp_plugin, "apply_dns", fail)
    config = conf(tmp_path, ipMasq=True, ipMasqBackend=backend)
    failed = call("ADD", host_ns, netns, config)
    assert failed.json["msg"] == "pyt: injected failure after masquerade"
    assert 'id: \\"c1\\"' not in masq_rules()
    assert "id: c1" not in masq_rules()
    assert leases(tmp_path) == set()
    assert [x["ifname"] for x in ip_json(netns, "link", "show")] == ["lo"]
    monkeypatch.undo()
    call("ADD", host_ns, netns, config).ok()  # the same checks see a successful ADD's rules
    assert ('id: \\"c1\\"' in masq_rules()) == (backend == "iptables")
    assert ("id: c1" in masq_rules()) == (backend == "nftables")


def test_config_errors(host_ns: str, netns: str, tmp_path: Path) -> None:
    for bad in ({"ipam": None}, {"mtu": "big"}, {"ipMasq": "maybe"}):
        config = {**conf(tmp_path), **bad}
        out = call("ADD", host_ns, netns, config)
        assert out.json["code"] == 7, out.json
    assert [x["ifname"] for x in ip_json(netns, "link", "show")] == ["lo"]


def test_check(host_ns: str, netns: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    out = call("ADD", host_ns, netns, config).ok()
    checked = {**config, "prevResult": out}
    assert call("CHECK", host_ns, netns, checked).status == 0
    ns_run(netns, "ip", "route", "del", "default", check=True)
    broken = call("CHECK", host_ns, netns, checked)
    assert broken.status == 1
    assert "0.0.0.0/0" in broken.json["msg"]


def test_status_and_gc(host_ns: str, netns: str, netns2: str, tmp_path: Path) -> None:
    path = str(tmp_path / "empty-cni-path")
    Path(path).mkdir()
    config = conf(tmp_path, version="1.1.0", ipMasq=True)
    assert call_plugin(host_ns, "ptp", cni_env("STATUS", path=path), config).status == 0
    call("ADD", host_ns, netns, config, "c1", path=path).ok()
    call("ADD", host_ns, netns2, config, "c2", path=path).ok()
    gc = {**config, "cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}]}
    assert call_plugin(host_ns, "ptp", cni_env("GC", path=path), gc).status == 0
    assert leases(tmp_path) == {"10.66.0.3", "fd66::3"}
    rules = ns_run(host_ns, "iptables-save", "-t", "nat").stdout
    assert 'id: \\"c2\\"' in rules
    assert 'id: \\"c1\\"' not in rules
