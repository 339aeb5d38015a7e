"""DEL and GC need only what finds the attachment's state, never ADD's rules.

A runtime retries a failing DEL until it succeeds, and the pod cannot go away meanwhile;
a config that ADD would refuse (or one that changed since ADD) must still tear down.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from pycni.testing import call_plugin, cni_env, exec_plugin_in, ns_run, unique_name

pytestmark = pytest.mark.netns


def _ipam(tmp_path: Path) -> dict[str, Any]:
    return {"type": "host-local", "subnet": "10.98.0.0/24", "dataDir": str(tmp_path / "ipam")}


# Per plugin: a config that breaks a rule only ADD needs (each failed DEL before).
CASES: dict[str, Any] = {
    "bridge-hairpin-promisc": lambda t: {"type": "bridge", "bridge": unique_name("br"),
                                         "hairpinMode": True, "promiscMode": True,
                                         "ipam": _ipam(t)},
    "bridge-l2-with-ipam": lambda t: {"type": "bridge", "disableContainerInterface": True,
                                      "ipam": _ipam(t)},
    "bridge-vlan-range": lambda t: {"type": "bridge", "vlan": 5000, "ipam": _ipam(t)},
    "ptp-no-ipam": lambda _: {"type": "ptp", "ipMasq": True},
    "tap-owner": lambda t: {"type": "tap", "owner": 2**40, "ipam": _ipam(t)},
    "macvlan-mode": lambda t: {"type": "macvlan", "master": "pytnone", "mode": "bogus",
                               "ipam": _ipam(t)},
    "vlan-no-master": lambda t: {"type": "vlan", "vlanId": 5, "ipam": _ipam(t)},
    "host-device-unnamed": lambda t: {"type": "host-device", "dataDir": str(t / "hd")},
    "vrf-main-table": lambda _: {"type": "vrf", "vrfname": "pytvrf", "table": 254},
    "tuning-bad-mac": lambda t: {"type": "tuning", "dataDir": str(t / "tuning"),
                                 "mac": "not-a-mac"},
    "firewall-firewalld": lambda t: {"type": "firewall", "backend": "firewalld",
                                     "dataDir": str(t / "fw")},
    "portmap-two-marks": lambda _: {"type": "portmap", "externalSetMarkChain": "PYTX",
                                    "markMasqBit": 3},
    "sbr-main-table": lambda _: {"type": "sbr", "table": 254},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_del_ignores_add_only_rules(host_ns: str, netns: str, tmp_path: Path,
                                    case: str) -> None:
    conf = {"cniVersion": "1.0.0", "name": "pytnet", **CASES[case](tmp_path)}
    env = cni_env("DEL", container_id="pytc", netns=netns)
    add = call_plugin(host_ns, conf["type"], {**env, "CNI_COMMAND": "ADD"}, conf)
    assert add.status != 0  # the rule is ADD's
    assert add.json["code"] == 7, add.stdout
    out = call_plugin(host_ns, conf["type"], env, conf)
    assert out.status == 0, out.stdout
    # The rules routing in host_ns still include main's: sbr/vrf left table 254 alone.
    assert "lookup main" in ns_run(host_ns, "ip", "rule", "show").stdout


def _pycni_executable(tmp_path: Path, plugin: str) -> str:
    """A pycni plugin executable as ``pycni install`` writes it (so stderr can be read)."""
    path = tmp_path / "bin" / plugin
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\n# pycni-plugin: {plugin}\n"
                    f"from pycni.invoke import plugin_main\n\nplugin_main('{plugin}')\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_bridge_del_without_its_ipam_plugin(host_ns: str, netns: str, tmp_path: Path) -> None:
    bridge = unique_name("br")
    conf = {"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge", "bridge": bridge,
            "ipam": _ipam(tmp_path)}
    added = call_plugin(host_ns, "bridge", cni_env("ADD", container_id="pytc", netns=netns),
                        conf).ok()
    host_veth = added["interfaces"][1]["name"]
    exe = _pycni_executable(tmp_path, "bridge")
    # The IPAM plugin is gone from CNI_PATH (and pycni has no such type either).
    gone = {**conf, "ipam": {**conf["ipam"], "type": "pyt-no-such-ipam"}}
    env = cni_env("DEL", container_id="pytc", netns=netns, path=str(tmp_path / "bin"))
    out = exec_plugin_in(host_ns, exe, env, gone)
    assert out.status == 0, (out.stdout, out.stderr)
    assert b"pyt-no-such-ipam" in out.stderr
    assert b"could not release" in out.stderr
    assert ns_run(netns, "ip", "link", "show", "eth0").returncode != 0
    assert ns_run(host_ns, "ip", "link", "show", host_veth).returncode != 0
    # The lease is still there for the IPAM plugin's GC (or a DEL once it is back).
    leases = json.dumps(sorted(p.name for p in (tmp_path / "ipam" / "pytnet").iterdir()))
    assert "10.98.0." in leases
