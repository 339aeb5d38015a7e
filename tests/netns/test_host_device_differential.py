"""host-device against /usr/lib/cni/host-device (Debian 1.1.1), and the two interoperating.

Each run gets fresh host and container namespaces with the same veth "NIC"; results must
match once MACs and sandbox paths are normalised, and so must the container's state after
ADD. After DEL both return the device under its name; the documented differences (pycni
restores the up state and the alias, the reference leaves the link down with its alias set
to its own name) are asserted explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.testing import call_plugin, cni_env, exec_plugin_in, ip_json, ns_run, temp_netns

pytestmark = [pytest.mark.netns, pytest.mark.differential]

DEV = "pytdev0"


def make_device(host_ns: str) -> None:
    ns_run(host_ns, "ip", "link", "add", DEV, "mtu", "1400", "type", "veth", "peer", "name",
           "pytpeer0", check=True)
    ns_run(host_ns, "ip", "link", "set", "pytpeer0", "up", check=True)
    ns_run(host_ns, "ip", "link", "set", DEV, "up", check=True)


def conf(tmp_path: Path, impl: str, *, ipam: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": "1.0.0", "name": "pythd", "type": "host-device",
                           "device": DEV, "dataDir": str(tmp_path / impl / "state")}
    if ipam:
        out["ipam"] = {"type": "host-local", "dataDir": str(tmp_path / impl / "ipam"),
                       "subnet": "10.74.0.0/24", "routes": [{"dst": "10.75.0.0/16"}]}
    return out


def run(impl: str, command: str, host_ns: str, netns: str, *, config: dict[str, Any],
        go_plugins: str) -> Any:
    env = cni_env(command, container_id="c1", netns=netns, ifname="net1", path=go_plugins)
    if impl == "go":
        return exec_plugin_in(host_ns, f"{go_plugins}/host-device", env, config)
    return call_plugin(host_ns, "host-device", env, config)


def normalise(result: Any, netns: str) -> Any:
    for iface in result.get("interfaces", []):
        iface["mac"] = "MAC"
        iface["sandbox"] = iface["sandbox"].replace(netns, "NETNS")
    return result


def state(netns: str) -> dict[str, Any]:
    links = [{"name": x["ifname"], "mtu": x["mtu"], "alias": x.get("ifalias"),
              "flags": sorted(set(x["flags"]) - {"LOWER_UP", "M-DOWN", "NO-CARRIER"})}
             for x in ip_json(netns, "link", "show")]
    addrs = sorted((x["ifname"], f"{a['local']}/{a['prefixlen']}")
                   for x in ip_json(netns, "addr", "show") for a in x.get("addr_info", [])
                   if a.get("scope") != "link")
    routes = sorted(str(sorted(r.items())) for r in ip_json(netns, "-4", "route", "show"))
    return {"links": sorted(links, key=str), "addrs": addrs, "routes": routes}


@pytest.mark.parametrize("ipam", [True, False], ids=["ipam", "l2"])
def test_same_result_and_state_as_reference(ipam: bool, tmp_path: Path,
                                            go_plugins: str) -> None:
    seen: dict[str, Any] = {}
    for impl in ("go", "pycni"):
        with temp_netns("h") as host_ns, temp_netns("c") as netns:
            make_device(host_ns)
            config = conf(tmp_path, impl, ipam=ipam)
            out = run(impl, "ADD", host_ns, netns, config=config, go_plugins=go_plugins).ok()
            after_add = state(netns)
            run(impl, "DEL", host_ns, netns, config=config, go_plugins=go_plugins).ok()
            host = {x["ifname"]: x for x in ip_json(host_ns, "link", "show")}
            seen[impl] = (normalise(out, netns), after_add, host[DEV], state(netns))
    go, ours = seen["go"], seen["pycni"]
    assert ours[0] == go[0]
    assert ours[1] == go[1]
    assert ours[3] == go[3]
    # After DEL: both give the device its name back with its MTU; then they differ on purpose.
    assert (ours[2]["mtu"], go[2]["mtu"]) == (1400, 1400)
    assert "UP" in ours[2]["flags"]
    assert "UP" not in go[2]["flags"]
    assert ours[2].get("ifalias") is None
    assert go[2].get("ifalias") == DEV


@pytest.mark.parametrize("order", [("go", "pycni"), ("pycni", "go")], ids=["go-pycni", "pycni-go"])
def test_either_returns_what_the_other_moved(order: tuple[str, str], host_ns: str, netns: str,
                                             tmp_path: Path, go_plugins: str) -> None:
    first, second = order
    make_device(host_ns)
    config = conf(tmp_path, "shared", ipam=True)
    run(first, "ADD", host_ns, netns, config=config, go_plugins=go_plugins).ok()
    run(second, "DEL", host_ns, netns, config=config, go_plugins=go_plugins).ok()
    names = {x["ifname"] for x in ip_json(host_ns, "link", "show")}
    assert DEV in names
    assert "net1" not in {x["ifname"] for x in ip_json(netns, "link", "show")}
    leases = tmp_path / "shared" / "ipam" / "pythd"
    assert not [p for p in leases.iterdir() if p.name[0].isdigit()]


def test_errors_both_fail(host_ns: str, netns: str, tmp_path: Path, go_plugins: str) -> None:
    for keys, our_code in (({"device": "pytnodev"}, 100), ({"hwaddr": "zz"}, 7),
                           ({"device": None}, 7)):
        for impl in ("go", "pycni"):
            config = {**conf(tmp_path, impl, ipam=False), **keys}
            config = {k: v for k, v in config.items() if v is not None}
            res = run(impl, "ADD", host_ns, netns, config=config, go_plugins=go_plugins)
            assert res.status != 0
            # The reference reports every one of these as 999.
            assert res.json["code"] == (999 if impl == "go" else our_code)
    # The reference's DEL is not idempotent ("failed to find net1"); pycni's is.
    config = conf(tmp_path, "x", ipam=False)
    assert run("go", "DEL", host_ns, netns, config=config, go_plugins=go_plugins).status != 0
    run("pycni", "DEL", host_ns, netns, config=config, go_plugins=go_plugins).ok()
