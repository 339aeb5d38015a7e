"""bridge and ptp against the Go reference plugins, over a corpus of real-world configs.

Each config in tests/data/cni with cniVersion <= 1.0.0 runs once through /usr/lib/cni/<type>
and once through pycni, each in fresh host and container namespaces. The results must be
equal once random veth names, MACs and sandbox paths are normalised, and so must the kernel
state both leave behind: links (kind, MTU, txqueuelen, flags, master, bridge-port flags),
addresses, routes, masquerade rules and the sysctls the plugins touch.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pycni.spec import parse_version
from pycni.testing import (
    call_plugin,
    cni_env,
    exec_plugin_in,
    ip_json,
    ns_run,
    temp_netns,
    unique_name,
)

pytestmark = [pytest.mark.netns, pytest.mark.differential]

DATA = Path(__file__).resolve().parent.parent / "data" / "cni"
CID = "pytdiff1"


def plugin_conf(path: Path) -> dict[str, Any]:
    """The bridge/ptp object of a .conf or .conflist, as the runtime would pass it."""
    raw = json.loads(path.read_text())
    if "plugins" not in raw:
        return raw
    first = dict(raw["plugins"][0])
    first.setdefault("cniVersion", raw.get("cniVersion", "0.1.0"))
    first["name"] = raw["name"]
    return first


def corpus() -> list[Path]:
    """Corpus files whose main plugin is bridge or ptp and whose version Go supports."""
    out = []
    for path in sorted(DATA.glob("*.conf*")):
        conf = plugin_conf(path)
        if conf["type"] in ("bridge", "ptp") and \
                parse_version(conf["cniVersion"]) <= (1, 0, 0):
            out.append(path)
    return out


def retarget(conf: dict[str, Any], data_dir: Path, bridge: str) -> dict[str, Any]:
    """Sandbox a real-world config: test bridge name and an IPAM store under tmp_path."""
    conf = json.loads(json.dumps(conf))
    if conf["type"] == "bridge":
        conf["bridge"] = bridge
    if conf.get("ipam", {}).get("type"):
        conf["ipam"]["dataDir"] = str(data_dir)
    return conf


def _sysctl(netns: str, name: str) -> str:
    proc = ns_run(netns, "cat", f"/proc/sys/{name}")
    return proc.stdout.strip() if proc.returncode == 0 else "-"


class Names:
    """Maps random names (veths) to stable placeholders, in order of first sight."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, name: str | None) -> str | None:
        if name is None or not name.startswith("veth"):
            return name
        return self.seen.setdefault(name, f"VETH{len(self.seen)}")


PORT_KEYS = ("hairpin", "isolated", "learning", "flood", "mcast_flood", "bcast_flood",
             "proxy_arp", "guard", "root_block", "fastleave")


def snapshot(netns: str, names: Names) -> dict[str, Any]:
    """What a user can observe of the namespace's network configuration."""
    links = []
    by_index = {}
    for link in ip_json(netns, "-d", "link", "show"):
        by_index[link["ifindex"]] = link["ifname"]
    for link in ip_json(netns, "-d", "link", "show"):
        info = link.get("linkinfo", {})
        slave = info.get("info_slave_data", {})
        data = info.get("info_data", {})
        links.append({
            "name": names(link["ifname"]),
            "kind": info.get("info_kind"),
            "mtu": link["mtu"],
            "txqlen": link.get("txqlen", 0),
            # Carrier settles asynchronously (linkwatch): not part of what a plugin decides.
            "flags": sorted(set(link["flags"]) - {"LOWER_UP", "M-DOWN", "NO-CARRIER"}),
            "master": names(link.get("master")),
            "promiscuity": link.get("promiscuity"),
            "port": {k: slave.get(k) for k in PORT_KEYS if k in slave},
            "bridge": {k: data.get(k) for k in ("vlan_filtering", "stp_state")
                       if k in data},
            "accept_ra": _sysctl(netns, f"net/ipv6/conf/{link['ifname']}/accept_ra"),
            "accept_dad": _sysctl(netns, f"net/ipv6/conf/{link['ifname']}/accept_dad"),
            "arp_notify": _sysctl(netns, f"net/ipv4/conf/{link['ifname']}/arp_notify"),
            "disable_ipv6": _sysctl(netns, f"net/ipv6/conf/{link['ifname']}/disable_ipv6"),
        })
    addrs = []
    for link in ip_json(netns, "addr", "show"):
        for a in link.get("addr_info", []):
            if a.get("scope") == "link" and a["family"] == "inet6":
                continue  # fe80:: addresses derive from the random MAC
            addrs.append((names(link["ifname"]), f"{a['local']}/{a['prefixlen']}",
                          a.get("broadcast"), a.get("scope")))
    routes = []
    for family in ("-4", "-6"):
        for r in ip_json(netns, family, "route", "show", "table", "main"):
            if r["dst"].startswith(("fe80", "ff00")):
                continue
            routes.append({k: names(v) if k == "dev" else v for k, v in sorted(r.items())})
    nat = []
    for tool in ("iptables-save", "ip6tables-save"):
        out = ns_run(netns, tool, "-t", "nat").stdout
        nat += [re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines()
                if not line.startswith("#")]
    return {
        "links": sorted(links, key=lambda x: str(x["name"])),
        "addrs": sorted(addrs, key=str),
        "routes": sorted(routes, key=json.dumps),
        "nat": nat,
        "forwarding": (_sysctl(netns, "net/ipv4/ip_forward"),
                       _sysctl(netns, "net/ipv6/conf/all/forwarding")),
    }


def _lines(obj: Any) -> list[str]:
    return json.dumps(obj, indent=1, sort_keys=True).splitlines()


def normalise_result(result: dict[str, Any], names: Names) -> dict[str, Any]:
    """A result without MACs, sandbox paths or random veth names."""
    result = json.loads(json.dumps(result))
    for intf in result.get("interfaces", []):
        intf["name"] = names(intf["name"])
        intf.pop("mac", None)
        if "sandbox" in intf:
            intf["sandbox"] = "SANDBOX"
    return result


def run_one(conf: dict[str, Any], runner: str, go_dir: str) -> tuple[dict[str, Any], ...]:
    """ADD in fresh namespaces; the normalised result and host/container snapshots; DEL."""
    names = Names()
    with temp_netns("h") as host_ns, temp_netns("c") as netns:
        env = cni_env("ADD", container_id=CID, netns=netns, path=go_dir)
        if runner == "go":
            call = exec_plugin_in(host_ns, f"{go_dir}/{conf['type']}", env, conf)
        else:
            call = call_plugin(host_ns, conf["type"], env, conf)
        result = call.ok()
        state = (normalise_result(result, names), snapshot(host_ns, names),
                 snapshot(netns, names))
        env["CNI_COMMAND"] = "DEL"
        if runner == "go":
            exec_plugin_in(host_ns, f"{go_dir}/{conf['type']}", env, conf).ok()
        else:
            call_plugin(host_ns, conf["type"], env, conf).ok()
        return state


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.name)
def test_matches_reference(path: Path, tmp_path: Path, go_plugins: str) -> None:
    base = plugin_conf(path)
    bridge = unique_name("br")
    theirs = run_one(retarget(base, tmp_path / "go", bridge), "go", go_plugins)
    ours = run_one(retarget(base, tmp_path / "ours", bridge), "ours", go_plugins)
    for what, a, b in zip(("result", "host namespace", "container namespace"), ours, theirs,
                          strict=True):
        if a != b:
            diff = difflib.unified_diff(_lines(b), _lines(a), "reference", "pycni", lineterm="")
            pytest.fail(f"{what} differs from the reference for {path.name}:\n"
                        + "\n".join(diff))


def test_corpus_is_not_empty() -> None:
    kinds = {plugin_conf(p)["type"] for p in corpus()}
    assert kinds == {"bridge", "ptp"}
