"""tuning behind the Go bridge: sysctls and link attributes in the container, restored on DEL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from meta_pods import bridge_pod, chained, ours, theirs

from pycni.testing import call_plugin, cni_env, ns_run, unique_name

pytestmark = pytest.mark.netns

MAC = "c2:b0:57:49:47:f1"


def _link(netns: str, dev: str = "eth0") -> dict[str, Any]:
    info: dict[str, Any] = json.loads(ns_run(netns, "ip", "-j", "-d", "link", "show", dev,
                                             check=True).stdout)[0]
    return info


def _sysctl(netns: str, path: str) -> str:
    return ns_run(netns, "cat", f"/proc/sys/{path}", check=True).stdout.strip()


def _attrs(link: dict[str, Any]) -> tuple[Any, ...]:
    return (link["address"], link["mtu"], link.get("promiscuity"), link.get("allmulti"),
            link.get("txqlen"))


@pytest.fixture
def pod(host_ns: str, netns: str, tmp_path: Path, go_plugins: str) -> dict[str, Any]:
    return bridge_pod(host_ns, netns, tmp_path, bridge=unique_name("br"), subnet="10.78.0.0/24",
                      cid="t1")


def _tuning(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    return {"type": "tuning", "dataDir": str(tmp_path / "tuning"),
            "sysctlAllowlist": str(tmp_path / "allowlist.conf"), **keys}


def test_sysctls_and_link_attributes_applied_and_restored(host_ns: str, netns: str,
                                                          pod: dict[str, Any],
                                                          tmp_path: Path) -> None:
    before = _link(netns)
    conf = chained(_tuning(tmp_path, sysctl={"net.core.somaxconn": "500",
                                             "net.ipv4.conf.IFNAME.arp_filter": "1"},
                           mac=MAC, mtu=1400, promisc=True, allmulti=True, txQLen=2000), pod)
    out = ours(host_ns, "tuning", "ADD", conf, cid="t1", netns=netns)
    assert [i["mac"] for i in out["interfaces"] if i["name"] == "eth0"] == [MAC]
    assert _sysctl(netns, "net/core/somaxconn") == "500"
    assert _sysctl(netns, "net/ipv4/conf/eth0/arp_filter") == "1"
    link = _link(netns)
    assert _attrs(link) == (MAC, 1400, 1, 1, 2000)
    assert call_plugin(host_ns, "tuning", cni_env("CHECK", container_id="t1", netns=netns),
                       conf).status == 0
    ours(host_ns, "tuning", "DEL", conf, cid="t1", netns=netns)
    assert _attrs(_link(netns)) == _attrs(before)
    assert not list((tmp_path / "tuning").iterdir())
    ours(host_ns, "tuning", "DEL", conf, cid="t1", netns=netns)


def test_cni_args_and_runtime_config_override(host_ns: str, netns: str, pod: dict[str, Any],
                                              tmp_path: Path) -> None:
    conf = chained(_tuning(tmp_path, mac=MAC, mtu=1400,
                           runtimeConfig={"mac": "c2:00:00:00:00:02"},
                           args={"cni": {"mtu": 1300, "sysctl": {
                               "net.ipv4.conf.IFNAME.arp_ignore": "2"}}}), pod)
    env = cni_env("ADD", container_id="t1", netns=netns,
                  args="IgnoreUnknown=1;MAC=c2:00:00:00:00:01")
    call_plugin(host_ns, "tuning", env, conf).ok()
    link = _link(netns)
    assert (link["address"], link["mtu"]) == ("c2:00:00:00:00:02", 1300)
    assert _sysctl(netns, "net/ipv4/conf/eth0/arp_ignore") == "2"


def test_check_reports_drift(host_ns: str, netns: str, pod: dict[str, Any],
                             tmp_path: Path) -> None:
    conf = chained(_tuning(tmp_path, mtu=1400), pod)
    ours(host_ns, "tuning", "ADD", conf, cid="t1", netns=netns)
    ns_run(netns, "ip", "link", "set", "eth0", "mtu", "1450", check=True)
    check = call_plugin(host_ns, "tuning", cni_env("CHECK", container_id="t1", netns=netns),
                        conf)
    assert check.status == 1
    assert "MTU" in check.json["msg"]


@pytest.mark.parametrize("key", ["kernel.hostname", "net/../kernel/hostname", "net.."])
def test_non_net_sysctl_is_refused(host_ns: str, netns: str, pod: dict[str, Any],
                                   tmp_path: Path, key: str) -> None:
    conf = chained(_tuning(tmp_path, sysctl={key: "x"}), pod)
    call = call_plugin(host_ns, "tuning", cni_env("ADD", container_id="t1", netns=netns), conf)
    assert call.status == 1
    assert call.json["code"] == 7


def test_allowlist(host_ns: str, netns: str, pod: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "allowlist.conf").write_text(
        "^net\\.core\\.somaxconn$\n\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n")
    allowed = chained(_tuning(tmp_path, sysctl={"net.core.somaxconn": "600",
                                                "net.ipv4.conf.IFNAME.arp_filter": "1"}), pod)
    ours(host_ns, "tuning", "ADD", allowed, cid="t1", netns=netns)
    assert _sysctl(netns, "net/core/somaxconn") == "600"
    # Inherited from the root namespace; ask for the other value, so a write would show.
    forward = _sysctl(netns, "net/ipv4/ip_forward")
    flipped = "0" if forward == "1" else "1"
    refused = chained(_tuning(tmp_path, sysctl={"net.ipv4.ip_forward": flipped}), pod)
    call = call_plugin(host_ns, "tuning", cni_env("ADD", container_id="t1", netns=netns),
                       refused)
    assert call.status == 1
    assert "not allowed" in call.json["msg"]
    assert _sysctl(netns, "net/ipv4/ip_forward") == forward


def test_matches_reference(host_ns: str, netns: str, netns2: str, pod: dict[str, Any],
                           tmp_path: Path) -> None:
    other = bridge_pod(host_ns, netns2, tmp_path, bridge=unique_name("br"),
                       subnet="10.79.0.0/24", cid="t2")
    originals = _attrs(_link(netns)), _attrs(_link(netns2))
    keys = {"sysctl": {"net.core.somaxconn": "700", "net.ipv4.conf.IFNAME.arp_filter": "1"},
            "mac": MAC, "mtu": 1420, "promisc": True, "allmulti": True}
    mine = ours(host_ns, "tuning", "ADD", chained(_tuning(tmp_path, **keys), pod), cid="t1",
                netns=netns)
    ref_conf = chained({"type": "tuning", "dataDir": str(tmp_path / "go"), **keys}, other)
    ref = theirs(host_ns, "tuning", "ADD", ref_conf, cid="t2", netns=netns2)
    assert [i["mac"] for i in mine["interfaces"]][-1] == [i["mac"] for i in ref["interfaces"]][-1]
    for path in ("net/core/somaxconn", "net/ipv4/conf/eth0/arp_filter"):
        assert _sysctl(netns, path) == _sysctl(netns2, path)
    assert _attrs(_link(netns))[:4] == _attrs(_link(netns2))[:4]
    theirs(host_ns, "tuning", "DEL", ref_conf, cid="t2", netns=netns2)
    ours(host_ns, "tuning", "DEL", chained(_tuning(tmp_path, **keys), pod), cid="t1",
         netns=netns)
    assert (_attrs(_link(netns)), _attrs(_link(netns2))) == originals


def test_gc_drops_stale_backups_of_this_network(host_ns: str, netns: str, pod: dict[str, Any],
                                               tmp_path: Path) -> None:
    conf = chained(_tuning(tmp_path, mtu=1400), pod)
    ours(host_ns, "tuning", "ADD", conf, cid="t1", netns=netns)
    foreign = tmp_path / "tuning" / "other_eth0.json"
    foreign.write_text('{"network": "elsewhere", "mtu": 1500}')
    gc = {"cniVersion": "1.1.0", "name": "pytnet", "type": "tuning",
          "dataDir": str(tmp_path / "tuning"),
          "cni.dev/valid-attachments": [{"containerID": "t1", "ifname": "eth0"}]}
    assert call_plugin(host_ns, "tuning", cni_env("GC"), gc).status == 0
    assert sorted(p.name for p in (tmp_path / "tuning").iterdir()) == ["other_eth0.json",
                                                                       "t1_eth0.json"]
    gc["cni.dev/valid-attachments"] = []
    assert call_plugin(host_ns, "tuning", cni_env("GC"), gc).status == 0
    assert sorted(p.name for p in (tmp_path / "tuning").iterdir()) == ["other_eth0.json"]


def test_del_when_netns_is_gone(host_ns: str, tmp_path: Path) -> None:
    conf = chained(_tuning(tmp_path, mtu=1400), None)
    ours(host_ns, "tuning", "DEL", conf, cid="gone", netns="/run/netns/pyt-gone")


def test_allowlist_is_checked_against_the_written_path(host_ns: str, netns: str,
                                                       pod: dict[str, Any],
                                                       tmp_path: Path) -> None:
    # The raw key matches the pattern; the path it would write is net/ipv4/ip_forward.
    (tmp_path / "allowlist.conf").write_text("^net\\.ipv4\\.conf\\.IFNAME\\.\n")
    conf = chained(_tuning(tmp_path, sysctl={
        "net.ipv4.conf.IFNAME.x/../net/ipv4/ip_forward": "1"}), pod)
    call = call_plugin(host_ns, "tuning", cni_env("ADD", container_id="t1", netns=netns), conf)
    assert call.status == 1
    assert call.json["code"] == 7
    assert _sysctl(netns, "net/ipv4/ip_forward") == "0"


def test_unwritable_backup_is_an_io_failure_that_leaves_the_link_alone(
        host_ns: str, netns: str, pod: dict[str, Any], tmp_path: Path) -> None:
    before = _link(netns)
    (tmp_path / "blocker").write_text("")
    conf = chained({**_tuning(tmp_path, mtu=1400), "dataDir": str(tmp_path / "blocker" / "d")},
                   pod)
    call = call_plugin(host_ns, "tuning", cni_env("ADD", container_id="t1", netns=netns), conf)
    assert call.status == 1
    assert call.json["code"] == 5
    assert call.json["msg"].startswith(f"failed to write {tmp_path / 'blocker' / 'd'}/")
    assert _attrs(_link(netns)) == _attrs(before)
