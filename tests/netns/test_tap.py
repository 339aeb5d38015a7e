"""tap in real namespaces: the device, its keys as ``ip -d`` shows them, IPAM, DEL, rollback.

The reference tap plugin is not in Debian's containernetworking-plugins 1.1.1 (it came in
1.2), so there is no differential test against /usr/lib/cni for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.testing import GO_PLUGIN_DIR, call_plugin, cni_env, ip_json, ns_run

pytestmark = pytest.mark.netns

CNI_PATH = "/nonexistent/pyt-cni-bin"  # IPAM is pycni's host-local, in-process


def conf(tmp_path: Path, *, ipam: bool = False, **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": "1.0.0", "name": "pyttap", "type": "tap"}
    if ipam:
        out["ipam"] = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                       "subnet": "10.71.0.0/24", "routes": [{"dst": "10.72.0.0/16"}]}
    out.update(keys)
    return out


def call(command: str, netns: str, host_ns: str, config: dict[str, Any], *,
         cni_args: str = "") -> Any:
    env = cni_env(command, container_id="c1", netns=netns, ifname="tap0", args=cni_args,
                  path=CNI_PATH)
    return call_plugin(host_ns, "tap", env, config)


def tap_link(netns: str) -> dict[str, Any] | None:
    found = [x for x in ip_json(netns, "-d", "link", "show") if x["ifname"] == "tap0"]
    return found[0] if found else None


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pyttap"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


def test_keys_are_applied(host_ns: str, netns: str, tmp_path: Path) -> None:
    ns_run(netns, "ip", "link", "add", "pytbr0", "type", "bridge", check=True)
    config = conf(tmp_path, mtu=1400, mac="02:11:22:33:44:55", multiQueue=True, owner=4242,
                  group=4343, bridge="pytbr0")
    out = call("ADD", netns, host_ns, config).ok()
    assert out["interfaces"] == [{"name": "tap0", "mac": "02:11:22:33:44:55", "sandbox": netns}]
    link = tap_link(netns)
    assert link is not None
    assert link["mtu"] == 1400
    assert link["address"] == "02:11:22:33:44:55"
    assert "UP" in link["flags"]
    assert link["master"] == "pytbr0"
    info = link["linkinfo"]
    assert info["info_kind"] == "tun"
    data = info["info_data"]
    assert (data["type"], data["pi"], data["vnet_hdr"], data["multi_queue"], data["persist"]) \
        == ("tap", False, True, True, True)
    assert str(data["user"]) == "4242"  # numeric: no such user in /etc/passwd
    assert str(data["group"]) == "4343"
    assert tap_link(host_ns) is None  # made in the container, never on the host side
    call("DEL", netns, host_ns, config).ok()
    assert tap_link(netns) is None
    call("DEL", netns, host_ns, config).ok()


def test_defaults_l2_only(host_ns: str, netns: str, tmp_path: Path) -> None:
    out = call("ADD", netns, host_ns, conf(tmp_path)).ok()
    link = tap_link(netns)
    assert link is not None
    assert out == {"cniVersion": "1.0.0", "dns": {},
                   "interfaces": [{"name": "tap0", "mac": link["address"], "sandbox": netns}]}
    data = link["linkinfo"]["info_data"]
    assert data["multi_queue"] is False
    assert "user" not in data  # no owner: anyone with CAP_NET_ADMIN may attach
    assert "group" not in data
    assert link["mtu"] == 1500
    assert "UP" in link["flags"]


def test_mac_from_cni_args_and_runtime_config(host_ns: str, netns: str,
                                              tmp_path: Path) -> None:
    config = conf(tmp_path, mac="02:00:00:00:00:01")
    out = call("ADD", netns, host_ns, config,
               cni_args="IgnoreUnknown=1;MAC=02:00:00:00:00:02").ok()
    assert out["interfaces"][0]["mac"] == "02:00:00:00:00:02"
    call("DEL", netns, host_ns, config).ok()
    config["runtimeConfig"] = {"mac": "02:00:00:00:00:03"}
    out = call("ADD", netns, host_ns, config,
               cni_args="IgnoreUnknown=1;MAC=02:00:00:00:00:02").ok()
    link = tap_link(netns)
    assert link is not None
    assert out["interfaces"][0]["mac"] == link["address"] == "02:00:00:00:00:03"


def test_ipam_addresses_routes_check(host_ns: str, netns: str, tmp_path: Path) -> None:
    config = conf(tmp_path, ipam=True)
    out = call("ADD", netns, host_ns, config).ok()
    assert [(ip["address"], ip["gateway"], ip["interface"]) for ip in out["ips"]] == [
        ("10.71.0.2/24", "10.71.0.1", 0)]
    addrs = {f"{a['local']}/{a['prefixlen']}" for x in ip_json(netns, "addr", "show", "tap0")
             for a in x["addr_info"] if a["family"] == "inet"}
    assert addrs == {"10.71.0.2/24"}
    assert any(r["dst"] == "10.72.0.0/16" for r in ip_json(netns, "-4", "route", "show"))
    arp_notify = ns_run(netns, "cat", "/proc/sys/net/ipv4/conf/tap0/arp_notify").stdout
    assert arp_notify.strip() == "1"
    checked = {**config, "prevResult": out}
    call("CHECK", netns, host_ns, checked).ok()
    ns_run(netns, "ip", "link", "set", "tap0", "address", "02:00:00:00:00:99", check=True)
    bad = call("CHECK", netns, host_ns, checked)
    assert bad.status != 0
    assert "MAC" in bad.json["msg"]
    call("DEL", netns, host_ns, config).ok()
    assert tap_link(netns) is None
    assert leases(tmp_path) == set()


@pytest.mark.parametrize("failure", ["bridge-missing", "bridge-not-bridge", "ipam", "taken"])
def test_failed_add_leaves_nothing(failure: str, host_ns: str, netns: str,
                                   tmp_path: Path) -> None:
    config = conf(tmp_path, ipam=True)
    code = 100
    if failure == "bridge-missing":
        config["bridge"] = "pytnobr"
    elif failure == "bridge-not-bridge":
        ns_run(netns, "ip", "link", "add", "pytve0", "type", "veth", "peer", "name", "pytve1",
               check=True)
        config["bridge"] = "pytve0"
    elif failure == "ipam":
        config["ipam"]["routes"] = [{"dst": "10.73.0.0/16", "gw": "10.200.0.1"}]
    else:
        ns_run(netns, "ip", "tuntap", "add", "mode", "tap", "name", "tap0", check=True)
    res = call("ADD", netns, host_ns, config)
    assert res.status != 0
    assert res.json["code"] == code, res.json
    if failure == "taken":
        assert "already has a link named 'tap0'" in res.json["msg"]
        assert tap_link(netns) is not None  # the other tap is untouched
    else:
        assert tap_link(netns) is None
    assert leases(tmp_path) == set()


def test_del_without_netns(host_ns: str, tmp_path: Path) -> None:
    config = conf(tmp_path, ipam=True)
    call("DEL", "/run/netns/pyt-gone", host_ns, config).ok()
    call("DEL", "", host_ns, config).ok()


def test_status_and_gc(host_ns: str, netns: str, tmp_path: Path) -> None:
    config = conf(tmp_path, ipam=True, cniVersion="1.1.0")
    call("ADD", netns, host_ns, config).ok()
    assert call_plugin(host_ns, "tap", cni_env("STATUS", path=CNI_PATH), config).status == 0
    held = leases(tmp_path)
    assert held
    gc = {**config, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "tap0"}]}
    call_plugin(host_ns, "tap", cni_env("GC", path=CNI_PATH), gc).ok()
    assert leases(tmp_path) == held
    gc = {**config, "cni.dev/valid-attachments": []}
    call_plugin(host_ns, "tap", cni_env("GC", path=CNI_PATH), gc).ok()
    assert leases(tmp_path) == set()


def test_reference_tap_not_shipped() -> None:
    if Path(GO_PLUGIN_DIR, "tap").exists():
        pytest.fail("/usr/lib/cni now ships tap: add a differential test for it")
    pytest.skip("no differential test: Debian's containernetworking-plugins 1.1.1 ships no "
                "tap plugin (upstream added it in 1.2)")
