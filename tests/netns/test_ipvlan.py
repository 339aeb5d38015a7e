"""The ipvlan plugin: config handling everywhere; the kernel part where ipvlan exists.

These machines' kernel has no ipvlan: there ADD must fail cleanly (code 100 naming the
module, lease released, nothing left behind) and the kernel tests skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.host import kind_supported, run_in_netns
from pycni.testing import call_plugin, cni_env, ip_json, ns_run, temp_netns, wait_for

pytestmark = pytest.mark.netns

NIC = "pytnic0"
NO_BIN = "/nonexistent/pyt-cni-bin"


def kernel_has(kind: str) -> bool:
    with temp_netns("k") as scratch:
        return run_in_netns(scratch, kind_supported, kind)


@pytest.fixture(scope="module")
def supported() -> bool:
    return kernel_has("ipvlan")


@pytest.fixture
def kernel(supported: bool) -> None:
    if not supported:
        pytest.skip("ipvlan kernel module missing")


@pytest.fixture
def nic(host_ns: str) -> str:
    ns_run(host_ns, "ip", "link", "add", NIC, "type", "veth", "peer", "name", "pytnic1",
           check=True)
    for link in (NIC, "pytnic1"):
        ns_run(host_ns, "ip", "link", "set", link, "up", check=True)
    return NIC


def conf(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "pytipv", "type": "ipvlan", "master": NIC,
        "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                 "ranges": [[{"subnet": "10.81.0.0/24"}]]}}
    out.update(keys)
    return out


def call(command: str, host_ns: str, netns: str, config: dict[str, Any], cid: str = "c1"
         ) -> Any:
    env = cni_env(command, container_id=cid, netns=netns, path=NO_BIN)
    return call_plugin(host_ns, "ipvlan", env, config)


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pytipv"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


def names(netns: str) -> list[str]:
    return sorted(x["ifname"] for x in ip_json(netns, "link", "show"))


@pytest.mark.parametrize(("keys", "text"), [
    ({"mode": "l4"}, "l4"),
    ({"mtu": 1501}, "master MTU(1500)"),
    ({"master": "pytnope"}, "pytnope"),
    ({"ipam": {}}, "ipam"),
])
@pytest.mark.usefixtures("nic")
def test_config_errors(host_ns: str, netns: str, tmp_path: Path, keys: dict[str, Any],
                       text: str) -> None:
    failed = call("ADD", host_ns, netns, conf(tmp_path, **keys))
    assert failed.json["code"] == 7
    assert text in failed.json["msg"]
    assert names(netns) == ["lo"]


def test_chained_master_needs_a_single_interface(host_ns: str, netns: str, nic: str,
                                                 tmp_path: Path) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}], "ips": []}
    config = conf(tmp_path, prevResult=prev)
    del config["master"]
    failed = call("ADD", host_ns, netns, config)
    assert failed.json["code"] == 7
    assert "single named interface" in failed.json["msg"]


def test_without_the_module_add_fails_cleanly(supported: bool, host_ns: str, netns: str,
                                              nic: str, tmp_path: Path) -> None:
    if supported:
        pytest.skip("the kernel has ipvlan")
    failed = call("ADD", host_ns, netns, conf(tmp_path))
    assert failed.json["code"] == 100
    assert "ipvlan kernel module missing" in failed.json["msg"]
    assert leases(tmp_path) == set()
    assert names(netns) == ["lo"]
    assert names(host_ns) == ["lo", NIC, "pytnic1"]
    call("DEL", host_ns, netns, conf(tmp_path)).ok()


def test_del_without_netns_releases_the_lease(host_ns: str, tmp_path: Path) -> None:
    call("DEL", host_ns, "/run/netns/pytgone", conf(tmp_path)).ok()
    call("DEL", host_ns, "", conf(tmp_path)).ok()


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
def test_add_check_del(host_ns: str, netns: str, nic: str, tmp_path: Path, mode: str) -> None:
    config = conf(tmp_path, mode=mode)
    out = call("ADD", host_ns, netns, config).ok()
    link = ip_json(netns, "-d", "link", "show", "dev", "eth0")[0]
    assert link["linkinfo"]["info_kind"] == "ipvlan"
    assert link["linkinfo"]["info_data"]["mode"] == mode
    assert out["ips"][0]["address"] == "10.81.0.2/24"
    call("CHECK", host_ns, netns, dict(config, prevResult=out)).ok()
    wrong = "l3" if mode == "l2" else "l2"
    assert call("CHECK", host_ns, netns, dict(config, mode=wrong, prevResult=out)).status != 0
    call("DEL", host_ns, netns, config).ok()
    call("DEL", host_ns, netns, config).ok()
    assert names(netns) == ["lo"]
    assert leases(tmp_path) == set()


@pytest.mark.usefixtures("kernel")
def test_two_pods_ping(host_ns: str, netns: str, netns2: str, nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    call("ADD", host_ns, netns, config, "c1").ok()
    call("ADD", host_ns, netns2, config, "c2").ok()
    assert wait_for(lambda: ns_run(netns, "ping", "-c1", "-W1", "10.81.0.3").returncode == 0,
                    timeout=10)


@pytest.mark.usefixtures("kernel")
def test_chained_uses_prev_result(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": NIC}],
            "ips": [{"address": "10.81.0.50/24", "interface": 0}]}
    config = conf(tmp_path, prevResult=prev)
    del config["master"], config["ipam"]
    out = call("ADD", host_ns, netns, config).ok()
    assert out["ips"][0]["address"] == "10.81.0.50/24"
    nic_index = ip_json(host_ns, "link", "show", "dev", NIC)[0]["ifindex"]
    assert ip_json(netns, "link", "show", "dev", "eth0")[0]["link_index"] == nic_index
    call("DEL", host_ns, netns, config).ok()


@pytest.mark.usefixtures("kernel")
def test_link_in_container(host_ns: str, netns: str, tmp_path: Path) -> None:
    ns_run(netns, "ip", "link", "add", "pytcnic0", "type", "veth", "peer", "name", "pytcnic1",
           check=True)
    ns_run(netns, "ip", "link", "set", "pytcnic0", "up", check=True)
    config = conf(tmp_path, master="pytcnic0", linkInContainer=True)
    out = call("ADD", host_ns, netns, config).ok()
    assert ip_json(netns, "-d", "link", "show", "dev", "eth0")[0]["link"] == "pytcnic0"
    call("CHECK", host_ns, netns, dict(config, prevResult=out)).ok()
    call("DEL", host_ns, netns, config).ok()
