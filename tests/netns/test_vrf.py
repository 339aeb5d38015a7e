"""The vrf plugin: config handling everywhere; the kernel part where vrf exists.

A veth named eth0 with addresses and a gateway route stands in for what the previous
plugin in the chain made. These machines' kernel has no VRF support: there ADD must fail
cleanly (code 100 naming the module, eth0 untouched) and the kernel tests skip.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycni.host import kind_supported, run_in_netns
from pycni.testing import call_plugin, cni_env, ip_json, ns_run, temp_netns

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def supported() -> bool:
    with temp_netns("k") as scratch:
        return run_in_netns(scratch, kind_supported, "vrf")


@pytest.fixture
def kernel(supported: bool) -> None:
    if not supported:
        pytest.skip("vrf kernel module missing")


def attach(netns: str, ifname: str = "eth0", v4: str = "10.84.0.2/24",
           v6: str = "fd84::2/64") -> None:
    """What a main plugin would have left: a link with addresses and a gateway route."""
    ns_run(netns, "ip", "link", "add", ifname, "type", "veth", "peer", "name", f"pyt{ifname}",
           check=True)
    for link in (ifname, f"pyt{ifname}"):
        ns_run(netns, "ip", "link", "set", link, "up", check=True)
    ns_run(netns, "ip", "addr", "add", v4, "dev", ifname, check=True)
    ns_run(netns, "ip", "addr", "add", v6, "dev", ifname, "nodad", check=True)
    ns_run(netns, "ip", "route", "add", "10.85.0.0/16", "via", v4.rsplit(".", 1)[0] + ".1",
           "dev", ifname, check=True)


def prev(netns: str, ifname: str = "eth0") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "interfaces": [{"name": ifname, "sandbox": netns}],
            "ips": [{"address": "10.84.0.2/24", "interface": 0}]}


def conf(netns: str, ifname: str = "eth0", **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": "1.0.0", "name": "pytvrf", "type": "vrf",
                           "vrfname": "pytblue", "prevResult": prev(netns, ifname)}
    out.update(keys)
    return out


def call(command: str, host_ns: str, netns: str, config: dict[str, Any],
         ifname: str = "eth0") -> Any:
    env = cni_env(command, container_id="c1", netns=netns, ifname=ifname)
    return call_plugin(host_ns, "vrf", env, config)


def link(netns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = ip_json(netns, "-d", "link", "show", "dev", name)[0]
    return found


@pytest.mark.parametrize(("keys", "text"), [
    ({"vrfname": ""}, "vrf name"),
    ({"vrfname": "x" * 16}, 'invalid "vrfname"'),
    ({"table": -1}, '"table"'),
    ({"table": "10"}, '"table"'),
    ({"table": 254}, "reserved"),
    ({"prevResult": None}, "prevResult"),
])
def test_config_errors(host_ns: str, netns: str, keys: dict[str, Any], text: str) -> None:
    config = {k: v for k, v in dict(conf(netns), **keys).items() if v is not None}
    failed = call("ADD", host_ns, netns, config)
    assert failed.json["code"] == 7
    assert text in failed.json["msg"]


def test_old_versions_are_refused(host_ns: str, netns: str) -> None:
    assert call("ADD", host_ns, netns, conf(netns, cniVersion="0.3.0")).json["code"] == 1


def test_without_the_module_add_fails_cleanly(supported: bool, host_ns: str,
                                              netns: str) -> None:
    if supported:
        pytest.skip("the kernel has vrf")
    attach(netns)
    before = ip_json(netns, "route", "show")
    failed = call("ADD", host_ns, netns, conf(netns))
    assert failed.json["code"] == 100
    assert "vrf kernel module missing" in failed.json["msg"]
    assert "master" not in link(netns, "eth0")
    assert ip_json(netns, "route", "show") == before
    assert sorted(x["ifname"] for x in ip_json(netns, "link", "show")) == ["eth0", "lo",
                                                                          "pyteth0"]
    # No VRF: DEL has nothing to undo; CHECK fails.
    call("DEL", host_ns, netns, conf(netns)).ok()
    assert call("CHECK", host_ns, netns, conf(netns)).status != 0


def test_del_is_idempotent(host_ns: str, netns: str) -> None:
    call("DEL", host_ns, netns, conf(netns)).ok()
    call("DEL", host_ns, "/run/netns/pytgone", conf(netns)).ok()
    call("DEL", host_ns, "", conf(netns)).ok()


@pytest.mark.usefixtures("kernel")
def test_add_moves_the_interface_and_its_routes(host_ns: str, netns: str) -> None:
    attach(netns)
    out = call("ADD", host_ns, netns, conf(netns)).ok()
    assert out["interfaces"][0]["name"] == "eth0"  # prevResult passes through
    vrf = link(netns, "pytblue")
    assert vrf["linkinfo"]["info_kind"] == "vrf"
    assert vrf["linkinfo"]["info_data"]["table"] == 1  # the lowest free table
    assert link(netns, "eth0")["master"] == "pytblue"
    table = {r["dst"] for r in ip_json(netns, "route", "show", "table", "1")}
    assert {"10.84.0.0/24", "10.85.0.0/16"} <= table
    v6 = {a["local"] for a in ip_json(netns, "addr", "show", "dev", "eth0")[0]["addr_info"]}
    assert "fd84::2" in v6
    call("CHECK", host_ns, netns, conf(netns)).ok()
    call("DEL", host_ns, netns, conf(netns)).ok()
    assert "master" not in link(netns, "eth0")
    assert "pytblue" not in {x["ifname"] for x in ip_json(netns, "link", "show")}


@pytest.mark.usefixtures("kernel")
def test_shared_vrf_and_table_conflicts(host_ns: str, netns: str) -> None:
    attach(netns, "eth0")
    attach(netns, "net1", "10.86.0.2/24", "fd86::2/64")
    call("ADD", host_ns, netns, conf(netns, table=100)).ok()
    failed = call("ADD", host_ns, netns, conf(netns, "net1", table=101), "net1")
    assert "different routing table" in failed.json["msg"]
    assert "master" not in link(netns, "net1")
    call("ADD", host_ns, netns, conf(netns, "net1", table=100), "net1").ok()
    call("DEL", host_ns, netns, conf(netns), "eth0").ok()
    assert link(netns, "pytblue")["linkinfo"]["info_data"]["table"] == 100  # net1 still in
    call("DEL", host_ns, netns, conf(netns, "net1"), "net1").ok()
    assert "pytblue" not in {x["ifname"] for x in ip_json(netns, "link", "show")}
