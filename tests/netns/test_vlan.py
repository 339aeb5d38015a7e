"""The vlan plugin: config handling everywhere; the kernel part where 8021q exists.

These machines' kernel has no 802.1Q support: there ADD must fail cleanly (code 100 naming
the module, lease released, nothing left behind) and the kernel tests skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.host import kind_supported, run_in_netns
from pycni.testing import call_plugin, cni_env, ip_json, ns_run, temp_netns

pytestmark = pytest.mark.netns

NIC = "pytnic0"
NO_BIN = "/nonexistent/pyt-cni-bin"


@pytest.fixture(scope="module")
def supported() -> bool:
    with temp_netns("k") as scratch:
        return run_in_netns(scratch, kind_supported, "vlan")


@pytest.fixture
def kernel(supported: bool) -> None:
    if not supported:
        pytest.skip("8021q (vlan) kernel module missing")


@pytest.fixture
def nic(host_ns: str) -> str:
    ns_run(host_ns, "ip", "link", "add", NIC, "type", "veth", "peer", "name", "pytnic1",
           check=True)
    ns_run(host_ns, "ip", "link", "set", NIC, "up", check=True)
    return NIC


def conf(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "pytvlan", "type": "vlan", "master": NIC,
        "vlanId": 100, "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                                "ranges": [[{"subnet": "10.82.0.0/24"}]]}}
    out.update(keys)
    return out


def call(command: str, host_ns: str, netns: str, config: dict[str, Any]) -> Any:
    env = cni_env(command, container_id="c1", netns=netns, path=NO_BIN)
    return call_plugin(host_ns, "vlan", env, config)


def names(netns: str) -> list[str]:
    return sorted(x["ifname"] for x in ip_json(netns, "link", "show"))


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pytvlan"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


@pytest.mark.parametrize(("keys", "text"), [
    ({"vlanId": 4095}, "VLAN ID 4095"),
    ({"vlanId": -1}, "VLAN ID -1"),
    ({"vlanId": "7"}, "VLAN ID '7'"),
    ({"master": ""}, '"master" field is required'),
    ({"master": "pytnope"}, "pytnope"),
    ({"mtu": 9000}, "master MTU(1500)"),
    ({"ipam": {}}, "ipam"),
])
@pytest.mark.usefixtures("nic")
def test_config_errors(host_ns: str, netns: str, tmp_path: Path, keys: dict[str, Any],
                       text: str) -> None:
    failed = call("ADD", host_ns, netns, conf(tmp_path, **keys))
    assert failed.json["code"] == 7
    assert text in failed.json["msg"]
    assert leases(tmp_path) == set()


def test_without_the_module_add_fails_cleanly(supported: bool, host_ns: str, netns: str,
                                              nic: str, tmp_path: Path) -> None:
    if supported:
        pytest.skip("the kernel has 8021q")
    failed = call("ADD", host_ns, netns, conf(tmp_path))
    assert failed.json["code"] == 100
    assert "8021q kernel module missing" in failed.json["msg"]
    assert leases(tmp_path) == set()
    assert names(netns) == ["lo"]
    assert names(host_ns) == ["lo", NIC, "pytnic1"]


def test_del_is_idempotent_without_anything(host_ns: str, netns: str, tmp_path: Path) -> None:
    # DEL needs neither the master nor the link.
    call("DEL", host_ns, netns, conf(tmp_path)).ok()
    call("DEL", host_ns, "/run/netns/pytgone", conf(tmp_path)).ok()


@pytest.mark.usefixtures("kernel")
def test_add_check_del(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path, mtu=1400)
    out = call("ADD", host_ns, netns, config).ok()
    link = ip_json(netns, "-d", "link", "show", "dev", "eth0")[0]
    assert link["linkinfo"]["info_kind"] == "vlan"
    assert link["linkinfo"]["info_data"]["id"] == 100
    assert link["mtu"] == 1400
    assert out["ips"][0]["address"] == "10.82.0.2/24"
    call("CHECK", host_ns, netns, dict(config, prevResult=out)).ok()
    assert call("CHECK", host_ns, netns, dict(config, vlanId=101, prevResult=out)).status != 0
    call("DEL", host_ns, netns, config).ok()
    call("DEL", host_ns, netns, config).ok()
    assert names(netns) == ["lo"]
    assert leases(tmp_path) == set()


@pytest.mark.usefixtures("kernel")
def test_link_in_container(host_ns: str, netns: str, tmp_path: Path) -> None:
    ns_run(netns, "ip", "link", "add", "pytcnic0", "type", "veth", "peer", "name", "pytcnic1",
           check=True)
    config = conf(tmp_path, master="pytcnic0", linkInContainer=True, vlanId=7)
    call("ADD", host_ns, netns, config).ok()
    assert ip_json(netns, "-d", "link", "show", "dev", "eth0")[0]["link"] == "pytcnic0"
    call("DEL", host_ns, netns, config).ok()
