"""The macvlan plugin in real namespaces: modes, MTU, MAC, linkInContainer, rollback, DEL,
CHECK, STATUS, GC. The "host NIC" is one end of a veth pair inside the test's host netns."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from pycni.host import run_in_netns
from pycni.testing import call_plugin, cni_env, ip_json, ns_run, temp_netns, wait_for

pytestmark = pytest.mark.netns

NIC = "pytnic0"
PEER = "pytnic1"
#: A CNI_PATH without plugins: IPAM runs in-process (pycni's host-local, not /usr/lib/cni's).
NO_BIN = "/nonexistent/pyt-cni-bin"


def make_nic(netns: str, name: str = NIC, peer: str = PEER, mtu: int = 1500) -> str:
    """A veth pair in ``netns`` standing in for the host's NIC (``name``) and the wire."""
    ns_run(netns, "ip", "link", "add", name, "mtu", str(mtu), "type", "veth", "peer", "name",
           peer, "mtu", str(mtu), check=True)
    for link in (name, peer):
        ns_run(netns, "ip", "link", "set", link, "up", check=True)
    return name


@pytest.fixture
def nic(host_ns: str) -> str:
    return make_nic(host_ns)


def conf(tmp_path: Path, *, version: str = "1.0.0", ipam: bool = True, **keys: Any
         ) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version, "name": "pytmv", "type": "macvlan",
                           "master": NIC}
    if ipam:
        out["ipam"] = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                       "ranges": [[{"subnet": "10.77.0.0/24"}]],
                       "routes": [{"dst": "10.78.0.0/16"}]}
    out.update(keys)
    return out


def call(command: str, host_ns: str, netns: str, config: dict[str, Any], cid: str = "c1",
         *, args: str = "") -> Any:
    env = cni_env(command, container_id=cid, netns=netns, args=args, path=NO_BIN)
    return call_plugin(host_ns, "macvlan", env, config)


def details(netns: str, ifname: str = "eth0") -> dict[str, Any]:
    link: dict[str, Any] = ip_json(netns, "-d", "link", "show", "dev", ifname)[0]
    return link


def addrs(netns: str, ifname: str = "eth0") -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}"
            for a in ip_json(netns, "addr", "show", "dev", ifname)[0]["addr_info"]
            if a.get("scope") != "link"}


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pytmv"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


def links(netns: str) -> list[str]:
    return sorted(x["ifname"] for x in ip_json(netns, "link", "show"))


def test_add_creates_a_macvlan_on_the_master(host_ns: str, netns: str, nic: str,
                                             tmp_path: Path) -> None:
    out = call("ADD", host_ns, netns, conf(tmp_path)).ok()
    link = details(netns)
    assert out["interfaces"] == [{"name": "eth0", "mac": link["address"], "sandbox": netns}]
    assert [(ip["address"], ip["gateway"], ip["interface"]) for ip in out["ips"]] == [
        ("10.77.0.2/24", "10.77.0.1", 0)]
    assert out["routes"] == [{"dst": "10.78.0.0/16"}]
    assert link["linkinfo"]["info_kind"] == "macvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "bridge"
    assert "UP" in link["flags"]
    nic_index = ip_json(host_ns, "link", "show", "dev", nic)[0]["ifindex"]
    assert link["link_index"] == nic_index
    assert addrs(netns) == {"10.77.0.2/24"}
    routes = {(r["dst"], r.get("gateway")) for r in ip_json(netns, "route", "show")}
    assert ("10.78.0.0/16", "10.77.0.1") in routes
    assert ns_run(netns, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").stdout.strip() == "1"
    # Nothing of ours is left in the host namespace (the link was born in the container).
    assert links(host_ns) == sorted(["lo", NIC, PEER])


def test_two_pods_in_bridge_mode_ping_each_other(host_ns: str, netns: str, netns2: str,
                                                 nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    call("ADD", host_ns, netns, config, "c1").ok()
    call("ADD", host_ns, netns2, config, "c2").ok()
    assert wait_for(lambda: ns_run(netns, "ping", "-c1", "-W1", "10.77.0.3").returncode == 0,
                    timeout=10)
    assert wait_for(lambda: ns_run(netns2, "ping", "-c1", "-W1", "10.77.0.2").returncode == 0,
                    timeout=10)


def test_private_mode_isolates_pods(host_ns: str, netns: str, netns2: str, nic: str,
                                    tmp_path: Path) -> None:
    config = conf(tmp_path, mode="private")
    call("ADD", host_ns, netns, config, "c1").ok()
    call("ADD", host_ns, netns2, config, "c2").ok()
    assert details(netns)["linkinfo"]["info_data"]["mode"] == "private"
    assert ns_run(netns, "ping", "-c1", "-W1", "10.77.0.3").returncode != 0


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru", "source"])
def test_modes(host_ns: str, netns: str, nic: str, tmp_path: Path, mode: str) -> None:
    config = conf(tmp_path, mode=mode)
    out = call("ADD", host_ns, netns, config).ok()
    assert details(netns)["linkinfo"]["info_data"]["mode"] == mode
    config["prevResult"] = out
    call("CHECK", host_ns, netns, config).ok()
    call("DEL", host_ns, netns, config).ok()


def test_unknown_mode_is_a_config_error(host_ns: str, netns: str, nic: str,
                                        tmp_path: Path) -> None:
    failed = call("ADD", host_ns, netns, conf(tmp_path, mode="hub"))
    assert failed.json["code"] == 7
    assert "hub" in failed.json["msg"]


def test_without_ipam_the_link_is_up_without_addresses(host_ns: str, netns: str, nic: str,
                                                       tmp_path: Path) -> None:
    out = call("ADD", host_ns, netns, conf(tmp_path, ipam=False)).ok()
    assert "ips" not in out
    assert [i["name"] for i in out["interfaces"]] == ["eth0"]
    assert "UP" in details(netns)["flags"]
    assert addrs(netns) == set()
    config = conf(tmp_path, ipam=False, prevResult=out)
    call("CHECK", host_ns, netns, config).ok()
    call("DEL", host_ns, netns, config).ok()
    assert links(netns) == ["lo"]


def test_mtu(host_ns: str, netns: str, tmp_path: Path) -> None:
    make_nic(host_ns, mtu=9000)
    call("ADD", host_ns, netns, conf(tmp_path, mtu=4000)).ok()
    assert details(netns)["mtu"] == 4000


def test_mtu_above_the_masters_is_refused(host_ns: str, netns: str, nic: str,
                                          tmp_path: Path) -> None:
    failed = call("ADD", host_ns, netns, conf(tmp_path, mtu=1501))
    assert failed.json["code"] == 7
    assert "master MTU(1500)" in failed.json["msg"]
    assert leases(tmp_path) == set()
    assert call("ADD", host_ns, netns, conf(tmp_path, mtu=-1)).json["code"] == 7


def test_mac_precedence(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path, mac="02:00:00:00:00:01")
    call("ADD", host_ns, netns, config).ok()
    assert details(netns)["address"] == "02:00:00:00:00:01"
    call("DEL", host_ns, netns, config).ok()
    out = call("ADD", host_ns, netns, config, args="IgnoreUnknown=1;MAC=02:00:00:00:00:02").ok()
    assert out["interfaces"][0]["mac"] == "02:00:00:00:00:02"
    call("DEL", host_ns, netns, config).ok()
    config["runtimeConfig"] = {"mac": "02:00:00:00:00:03"}
    out = call("ADD", host_ns, netns, config, args="IgnoreUnknown=1;MAC=02:00:00:00:00:02").ok()
    assert details(netns)["address"] == out["interfaces"][0]["mac"] == "02:00:00:00:00:03"


def test_bad_mac_is_a_config_error(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    assert call("ADD", host_ns, netns, conf(tmp_path, mac="zz")).json["code"] == 7


def test_bcqueuelen(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    call("ADD", host_ns, netns, conf(tmp_path, bcqueuelen=123)).ok()
    assert details(netns)["linkinfo"]["info_data"]["bcqueuelen"] == 123
    assert call("ADD", host_ns, netns, conf(tmp_path, bcqueuelen=-1), "c2").json["code"] == 7


def test_link_in_container(host_ns: str, netns: str, tmp_path: Path) -> None:
    # The master is an interface inside the container (e.g. one host-device moved there).
    make_nic(netns, "pytcnic0", "pytcnic1")
    config = conf(tmp_path, master="pytcnic0", linkInContainer=True)
    out = call("ADD", host_ns, netns, config).ok()
    link = details(netns)
    assert link["link"] == "pytcnic0"
    assert link["linkinfo"]["info_kind"] == "macvlan"
    config["prevResult"] = out
    call("CHECK", host_ns, netns, config).ok()
    call("DEL", host_ns, netns, config).ok()
    assert links(netns) == sorted(["lo", "pytcnic0", "pytcnic1"])
    # Without linkInContainer that master does not exist in the host namespace.
    failed = call("ADD", host_ns, netns, conf(tmp_path, master="pytcnic0"))
    assert failed.json["code"] == 7
    assert "pytcnic0" in failed.json["msg"]


def test_master_defaults_to_the_default_route_interface(host_ns: str, netns: str, nic: str,
                                                        tmp_path: Path) -> None:
    config = conf(tmp_path)
    del config["master"]
    failed = call("ADD", host_ns, netns, config)
    assert failed.json["code"] == 7
    assert "default route" in failed.json["msg"]
    ns_run(host_ns, "ip", "addr", "add", "10.79.0.2/24", "dev", nic, check=True)
    ns_run(host_ns, "ip", "route", "add", "default", "via", "10.79.0.1", check=True)
    call("ADD", host_ns, netns, config).ok()
    nic_index = ip_json(host_ns, "link", "show", "dev", nic)[0]["ifindex"]
    assert details(netns)["link_index"] == nic_index


def test_missing_master(host_ns: str, netns: str, tmp_path: Path) -> None:
    failed = call("ADD", host_ns, netns, conf(tmp_path, master="pytnope"))
    assert failed.json["code"] == 7
    assert '"pytnope" does not exist' in failed.json["msg"]
    assert leases(tmp_path) == set()


def test_rollback_when_the_interface_exists(host_ns: str, netns: str, nic: str,
                                            tmp_path: Path) -> None:
    ns_run(netns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "pytpeer",
           check=True)
    failed = call("ADD", host_ns, netns, conf(tmp_path))
    assert failed.json["code"] == 100
    assert "already exists" in failed.json["msg"]
    assert leases(tmp_path) == set()
    assert links(netns) == ["eth0", "lo", "pytpeer"]  # no temporary macvlan left behind
    assert links(host_ns) == sorted(["lo", NIC, PEER])


def test_rollback_when_ipam_fails(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    config["ipam"]["ranges"] = [[{"subnet": "10.77.0.0/30"}]]  # one usable address
    call("ADD", host_ns, netns, config, "c1").ok()
    with temp_netns("c") as other:
        failed = call("ADD", host_ns, other, config, "c2")
        assert failed.json["code"] == 101  # AddressExhausted
        assert links(other) == ["lo"]
    assert leases(tmp_path) == {"10.77.0.2"}


def test_rollback_when_configuring_fails(host_ns: str, netns: str, nic: str,
                                         tmp_path: Path) -> None:
    # A route IPAM hands out that the kernel refuses (gateway outside every subnet).
    config = conf(tmp_path)
    config["ipam"]["routes"] = [{"dst": "10.80.0.0/16", "gw": "192.0.2.1"}]
    failed = call("ADD", host_ns, netns, config)
    assert failed.json["code"] == 100
    assert links(netns) == ["lo"]
    assert leases(tmp_path) == set()


def test_del_is_idempotent_and_releases_the_lease(host_ns: str, nic: str,
                                                  tmp_path: Path) -> None:
    config = conf(tmp_path)
    with temp_netns("c") as gone:
        call("ADD", host_ns, gone, config).ok()
        call("DEL", host_ns, gone, config).ok()
        call("DEL", host_ns, gone, config).ok()
        assert links(gone) == ["lo"]
        call("ADD", host_ns, gone, config).ok()
    # The netns is gone: DEL still succeeds and releases the lease.
    assert leases(tmp_path) == {"10.77.0.3"}  # host-local hands out addresses round-robin
    call("DEL", host_ns, gone, config).ok()
    assert leases(tmp_path) == set()
    call("DEL", host_ns, "", config).ok()


def test_del_needs_no_master(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    call("ADD", host_ns, netns, config).ok()
    ns_run(host_ns, "ip", "link", "del", NIC, check=True)  # takes the macvlan with it
    call("DEL", host_ns, netns, config).ok()
    assert leases(tmp_path) == set()


def test_check(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    out = call("ADD", host_ns, netns, config).ok()
    config["prevResult"] = out
    call("CHECK", host_ns, netns, config).ok()
    wrong_mode = dict(config, mode="vepa")
    failed = call("CHECK", host_ns, netns, wrong_mode)
    assert failed.status != 0
    assert "mode" in failed.json["msg"]
    ns_run(netns, "ip", "addr", "del", "10.77.0.2/24", "dev", "eth0", check=True)
    failed = call("CHECK", host_ns, netns, config)
    assert "10.77.0.2/24" in failed.json["msg"]
    ns_run(netns, "ip", "link", "del", "eth0", check=True)
    assert call("CHECK", host_ns, netns, config).status != 0
    no_prev = conf(tmp_path)
    assert call("CHECK", host_ns, netns, no_prev).json["code"] == 7


def test_check_detects_another_master(host_ns: str, netns: str, nic: str,
                                      tmp_path: Path) -> None:
    make_nic(host_ns, "pytnic2", "pytnic3")
    out = call("ADD", host_ns, netns, conf(tmp_path)).ok()
    failed = call("CHECK", host_ns, netns, conf(tmp_path, master="pytnic2", prevResult=out))
    assert "pytnic2" in failed.json["msg"]


def test_status(host_ns: str, nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path, version="1.1.0")
    env = cni_env("STATUS", path=NO_BIN)
    call_plugin(host_ns, "macvlan", env, config).ok()
    ns_run(host_ns, "ip", "link", "set", nic, "down", check=True)
    failed = call_plugin(host_ns, "macvlan", env, config)
    assert failed.json["code"] == 50
    assert NIC in failed.json["msg"]
    missing = call_plugin(host_ns, "macvlan", env, conf(tmp_path, version="1.1.0",
                                                        master="pytnope"))
    assert missing.json["code"] == 50
    assert "pytnope" in missing.json["msg"]


def test_gc_releases_leases_of_gone_attachments(host_ns: str, netns: str, netns2: str,
                                                nic: str, tmp_path: Path) -> None:
    config = conf(tmp_path, version="1.1.0")
    call("ADD", host_ns, netns, config, "c1").ok()
    call("ADD", host_ns, netns2, config, "c2").ok()
    gc = dict(config, **{"cni.dev/valid-attachments": [{"containerID": "c1",
                                                         "ifname": "eth0"}]})
    call_plugin(host_ns, "macvlan", cni_env("GC", path=NO_BIN), gc).ok()
    assert leases(tmp_path) == {"10.77.0.2"}


def test_gratuitous_arp_on_add(host_ns: str, netns: str, nic: str, tmp_path: Path) -> None:
    # Listen on the far end of the "wire" for the announcement of the pod's address.
    def open_listener() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        sock.bind((PEER, 0x0806))
        sock.settimeout(0.2)
        return sock

    sock = run_in_netns(host_ns, open_listener)
    try:
        out = call("ADD", host_ns, netns, conf(tmp_path)).ok()
        mac = bytes.fromhex(out["interfaces"][0]["mac"].replace(":", ""))
        ip = socket.inet_aton("10.77.0.2")

        def announced() -> bool:
            try:
                frame = sock.recv(2048)
            except TimeoutError:
                return False
            # ARP sender hardware/protocol address and target protocol address.
            return frame[22:28] == mac and frame[28:32] == ip and frame[38:42] == ip

        assert wait_for(announced, timeout=5)
    finally:
        sock.close()


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_result_versions(host_ns: str, netns: str, nic: str, tmp_path: Path,
                         version: str) -> None:
    out = call("ADD", host_ns, netns, conf(tmp_path, version=version)).ok()
    assert out["cniVersion"] == version
    assert out["ips"][0]["address"] == "10.77.0.2/24"
    if version == "0.3.1":
        assert out["ips"][0]["version"] == "4"
