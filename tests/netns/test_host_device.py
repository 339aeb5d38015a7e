"""host-device in real namespaces: a veth end in the test's host namespace plays the NIC.

The device moves into the container under CNI_IFNAME, gets its IPAM addresses, and DEL
brings it back under its own name with its MTU, alias and up/down state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.host import remove_netns
from pycni.testing import call_plugin, cni_env, ip_json, ns_run, temp_netns

pytestmark = pytest.mark.netns

DEV = "pytdev0"
PEER = "pytpeer0"


def make_device(host_ns: str, *, mtu: int = 1400, up: bool = True, alias: str = "pyt uplink",
                name: str = DEV) -> str:
    """A veth end called ``name`` in ``host_ns``; returns its MAC."""
    peer = PEER if name == DEV else f"{name}p"
    ns_run(host_ns, "ip", "link", "add", name, "mtu", str(mtu), "type", "veth", "peer", "name",
           peer, check=True)
    # The peer up gives the device carrier, so IPv6 DAD can finish once it is addressed.
    ns_run(host_ns, "ip", "link", "set", peer, "up", check=True)
    if alias:
        ns_run(host_ns, "ip", "link", "set", name, "alias", alias, check=True)
    if up:
        ns_run(host_ns, "ip", "link", "set", name, "up", check=True)
    return str(ip_json(host_ns, "link", "show", name)[0]["address"])


def conf(tmp_path: Path, *, ipam: bool = True, **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": "1.0.0", "name": "pythd", "type": "host-device",
                           "dataDir": str(tmp_path / "state")}
    if ipam:
        out["ipam"] = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                       "ranges": [[{"subnet": "10.67.0.0/24"}], [{"subnet": "fd67::/64"}]],
                       "routes": [{"dst": "10.68.0.0/16"}]}
    out.update(keys)
    return out


#: No Go plugins on this CNI_PATH: IPAM is pycni's host-local, in-process.
CNI_PATH = "/nonexistent/pyt-cni-bin"


def call(command: str, host_ns: str, netns: str, config: dict[str, Any], *, cid: str = "c1",
         ifname: str = "net1") -> Any:
    env = cni_env(command, container_id=cid, netns=netns, ifname=ifname, path=CNI_PATH)
    return call_plugin(host_ns, "host-device", env, config)


def link(netns: str, name: str) -> dict[str, Any] | None:
    found = [x for x in ip_json(netns, "link", "show") if x["ifname"] == name]
    return found[0] if found else None


def global_addrs(netns: str, name: str) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}"
            for x in ip_json(netns, "addr", "show", "dev", name)
            for a in x.get("addr_info", []) if a.get("scope") == "global"}


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pythd"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


def records(tmp_path: Path) -> list[str]:
    d = tmp_path / "state"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def assert_back_home(host_ns: str, netns: str, *, mtu: int = 1400, up: bool = True,
                     alias: str | None = "pyt uplink") -> None:
    dev = link(host_ns, DEV)
    assert dev is not None, "the device did not come back to the host namespace"
    assert dev["mtu"] == mtu
    assert ("UP" in dev["flags"]) == up
    assert dev.get("ifalias") == alias
    assert link(netns, "net1") is None


@pytest.mark.parametrize("select", ["device", "hwaddr"])
def test_add_moves_device_and_del_brings_it_back(select: str, host_ns: str, netns: str,
                                                 tmp_path: Path) -> None:
    mac = make_device(host_ns)
    config = conf(tmp_path, **{select: DEV if select == "device" else mac.upper()})
    out = call("ADD", host_ns, netns, config).ok()
    assert out["interfaces"] == [{"name": "net1", "mac": mac, "sandbox": netns}]
    assert [(ip["address"], ip["interface"]) for ip in out["ips"]] == [
        ("10.67.0.2/24", 0), ("fd67::2/64", 0)]
    assert link(host_ns, DEV) is None
    moved = link(netns, "net1")
    assert moved is not None
    assert moved["address"] == mac
    assert "UP" in moved["flags"]
    assert moved.get("ifalias") == DEV  # the original name, where the reference keeps it
    assert global_addrs(netns, "net1") == {"10.67.0.2/24", "fd67::2/64"}
    assert any(r["dst"] == "10.68.0.0/16" and r["gateway"] == "10.67.0.1"
               for r in ip_json(netns, "-4", "route", "show"))
    assert records(tmp_path) == ["c1_net1.json"]

    ns_run(netns, "ip", "link", "set", "net1", "mtu", "1300", check=True)
    call("DEL", host_ns, netns, config).ok()
    assert_back_home(host_ns, netns)
    assert global_addrs(host_ns, DEV) == set()  # moving a device flushes its addresses
    assert leases(tmp_path) == set()
    assert records(tmp_path) == []
    call("DEL", host_ns, netns, config).ok()  # idempotent
    assert_back_home(host_ns, netns)


def test_l2_only_and_down_device_comes_back_down(host_ns: str, netns: str,
                                                tmp_path: Path) -> None:
    mac = make_device(host_ns, mtu=1500, up=False, alias="")
    config = conf(tmp_path, ipam=False, device=DEV)
    out = call("ADD", host_ns, netns, config).ok()
    assert out == {"cniVersion": "1.0.0", "dns": {},
                   "interfaces": [{"name": "net1", "mac": mac, "sandbox": netns}]}
    moved = link(netns, "net1")
    assert moved is not None
    assert "UP" in moved["flags"]
    call("DEL", host_ns, netns, config).ok()
    assert_back_home(host_ns, netns, mtu=1500, up=False, alias=None)


def test_check(host_ns: str, netns: str, tmp_path: Path) -> None:
    make_device(host_ns)
    config = conf(tmp_path, device=DEV)
    out = call("ADD", host_ns, netns, config).ok()
    checked = {**config, "prevResult": out}
    call("CHECK", host_ns, netns, checked).ok()
    ns_run(netns, "ip", "addr", "del", "10.67.0.2/24", "dev", "net1", check=True)
    bad = call("CHECK", host_ns, netns, checked)
    assert bad.status != 0
    assert "10.67.0.2/24" in bad.json["msg"]
    missing = call("CHECK", host_ns, netns, config)
    assert missing.json["code"] == 7
    call("DEL", host_ns, netns, config).ok()


@pytest.mark.parametrize("failure", ["ipam-missing", "route"])
def test_failed_add_returns_the_device(failure: str, host_ns: str, netns: str,
                                       tmp_path: Path) -> None:
    make_device(host_ns)
    config = conf(tmp_path, device=DEV)
    if failure == "ipam-missing":
        config["ipam"] = {"type": "pytnoipam"}
    else:  # IPAM succeeds, then a route through an off-link gateway cannot be added
        config["ipam"]["routes"] = [{"dst": "10.69.0.0/16", "gw": "10.200.0.1"}]
    res = call("ADD", host_ns, netns, config)
    assert res.status != 0
    assert_back_home(host_ns, netns)
    assert leases(tmp_path) == set()
    assert records(tmp_path) == []


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_result_that_cannot_be_written_returns_the_device(version: str, host_ns: str,
                                                          netns: str, tmp_path: Path) -> None:
    # Without IPAM the result has no address, which a 0.1.0/0.2.0 result cannot express:
    # the ADD fails (code 1) and must not leave the device in the container.
    make_device(host_ns)
    res = call("ADD", host_ns, netns, conf(tmp_path, ipam=False, device=DEV,
                                            cniVersion=version))
    assert res.status == 1
    assert res.json["code"] == 1
    assert_back_home(host_ns, netns)
    assert records(tmp_path) == []


def test_name_taken_in_container_leaves_both_alone(host_ns: str, netns: str,
                                                  tmp_path: Path) -> None:
    make_device(host_ns)
    ns_run(netns, "ip", "link", "add", "net1", "type", "veth", "peer", "name", "pytother",
           check=True)
    config = conf(tmp_path, device=DEV)
    res = call("ADD", host_ns, netns, config)
    assert res.json["code"] == 100
    assert "already has a link 'net1'" in res.json["msg"]
    dev = link(host_ns, DEV)
    assert dev is not None
    assert "UP" in dev["flags"]
    assert dev.get("ifalias") == "pyt uplink"
    theirs = link(netns, "net1")
    assert theirs is not None
    assert theirs.get("ifalias") is None
    assert leases(tmp_path) == set()


def test_second_add_of_same_attachment_keeps_first(host_ns: str, netns: str,
                                                  tmp_path: Path) -> None:
    make_device(host_ns)
    make_device(host_ns, name="pytdev1")
    config = conf(tmp_path, ipam=False, device=DEV)
    call("ADD", host_ns, netns, config).ok()
    again = call("ADD", host_ns, netns, {**config, "device": "pytdev1"})
    assert again.status != 0
    assert link(host_ns, "pytdev1") is not None  # untouched
    moved = link(netns, "net1")
    assert moved is not None
    assert moved.get("ifalias") == DEV
    call("DEL", host_ns, netns, config).ok()
    assert_back_home(host_ns, netns)


def test_missing_device_and_bad_config(host_ns: str, netns: str, tmp_path: Path) -> None:
    res = call("ADD", host_ns, netns, conf(tmp_path, device="pytnodev"))
    assert res.json["code"] == 100
    assert "pytnodev" in res.json["msg"]
    assert leases(tmp_path) == set()
    res = call("ADD", host_ns, netns, conf(tmp_path))
    assert res.json["code"] == 7
    res = call("ADD", host_ns, netns, conf(tmp_path, hwaddr="02:00:00:00:00:99"))
    assert res.json["code"] == 100


def test_del_after_netns_is_gone(host_ns: str, tmp_path: Path) -> None:
    make_device(host_ns)
    config = conf(tmp_path, device=DEV)
    with temp_netns("c") as netns:
        call("ADD", host_ns, netns, config).ok()
        remove_netns(Path(netns).name)
        # A veth dies with its namespace (a physical NIC would return to the initial one).
        call("DEL", host_ns, netns, config).ok()
    assert leases(tmp_path) == set()
    assert records(tmp_path) == []
    call("DEL", host_ns, "", config).ok()


def test_gc_and_status(host_ns: str, netns: str, tmp_path: Path) -> None:
    make_device(host_ns)
    config = conf(tmp_path, device=DEV, cniVersion="1.1.0")
    call("ADD", host_ns, netns, config).ok()
    env = cni_env("STATUS", path=CNI_PATH)
    assert call_plugin(host_ns, "host-device", env, config).status == 0
    keep = {**config, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "net1"}]}
    call_plugin(host_ns, "host-device", cni_env("GC", path=CNI_PATH), keep).ok()
    assert records(tmp_path) == ["c1_net1.json"]
    assert leases(tmp_path) == {"10.67.0.2", "fd67::2"}
    drop = {**config, "cni.dev/valid-attachments": []}
    call_plugin(host_ns, "host-device", cni_env("GC", path=CNI_PATH), drop).ok()
    assert records(tmp_path) == []
    assert leases(tmp_path) == set()
    call("DEL", host_ns, netns, config).ok()
    # Without its record the device still comes back (named from its alias), but down.
    assert_back_home(host_ns, netns, up=False, alias=None)


def _machine_nic_parent() -> tuple[str, str] | None:
    """(kernelpath, PCI address) of the machine's first NIC with a PCI parent, read-only."""
    for entry in sorted(Path("/sys/class/net").iterdir()):
        real = entry.resolve()
        if real.parent.name != "net":
            continue
        parent = real.parent.parent
        pci = parent if parent.name.count(":") == 2 else parent.parent
        if pci.name.count(":") == 2:
            return str(parent), pci.name
    return None


def test_kernelpath_and_pci_never_take_a_namesake(host_ns: str, netns: str,
                                                  tmp_path: Path) -> None:
    """sysfs shows the namespace that mounted it: the machine's NIC names, not host_ns's.

    host_ns gets a veth named like the machine's NIC; a lookup by the NIC's sysfs path or
    PCI address must not take it (the NIC is not in host_ns, so nothing matches).
    """
    found = _machine_nic_parent()
    if found is None:
        pytest.skip("this machine has no NIC with a PCI parent")
    kernelpath, pci = found
    nic = next(p.name for p in Path(kernelpath, "net").iterdir())
    make_device(host_ns, name=nic, alias="")
    for key, value in (("kernelpath", kernelpath), ("pciBusID", pci),
                       ("runtimeConfig", {"deviceID": pci})):
        res = call("ADD", host_ns, netns, conf(tmp_path, ipam=False, **{key: value}))
        assert res.json["code"] == 100, res.json
        assert "no network device of" in res.json["msg"]
        assert link(host_ns, nic) is not None
    assert link(netns, "net1") is None


def test_kernelpath_of_a_test_device() -> None:
    pytest.skip("kernelpath needs a device with a parent bus device inside a test netns: "
                "veths and macvlans are virtual (no parent) and netdevsim is not built into "
                "this kernel; the lookup is covered against a fake sysfs in "
                "tests/unit/test_host_device_lookup.py")
