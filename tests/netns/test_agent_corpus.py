"""Agent mode and standalone mode give identical results and state, over the config corpus.

Every config of tests/data/cni, and loopback / bridge+host-local+portmap / ptp+tuning
chains, runs through the runtime (:class:`pycni.runtime.CNIConfig`, VERSION negotiation,
ADD, CHECK, DEL) with the shims ``pycni install`` writes: once with a ``pycni agent`` serving
them, once with no agent (each shim runs its plugin). Each run has fresh host and container
namespaces; results, kernel state after ADD and after DEL, and the IPAM store must match.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from agent_support import AgentProcess, install_shims
from test_bridge_ptp_differential import Names, normalise_result, snapshot

from pycni.host import run_in_netns
from pycni.runtime import CNIConfig, RuntimeConf
from pycni.spec import NetworkConfigList, parse_version
from pycni.testing import ns_run, temp_netns, unique_name

pytestmark = [pytest.mark.netns, pytest.mark.integration]

DATA = Path(__file__).resolve().parent.parent / "data" / "cni"

CHAINS: dict[str, dict[str, Any]] = {
    "loopback": {"cniVersion": "1.0.0", "name": "pytlo", "plugins": [{"type": "loopback"}]},
    "bridge-hostlocal-portmap": {
        "cniVersion": "1.0.0", "name": "pytpm",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "subnet": "10.91.0.0/24",
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]},
    "ptp-tuning": {
        "cniVersion": "1.0.0", "name": "pyttun",
        "plugins": [
            {"type": "ptp", "ipMasq": True,
             "ipam": {"type": "host-local", "subnet": "10.92.0.0/24"}},
            {"type": "tuning", "mtu": 1400, "sysctl": {"net.core.somaxconn": "512"}},
        ]},
}

PORTS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]


def cases() -> list[tuple[str, dict[str, Any]]]:
    out = [(p.name, json.loads(p.read_text())) for p in sorted(DATA.glob("*.conf*"))]
    return out + list(CHAINS.items())


def retarget(raw: dict[str, Any], tmp: Path, bridge: str) -> NetworkConfigList:
    """The config with a test bridge name and every store under ``tmp``."""
    raw = json.loads(json.dumps(raw))
    plugins = raw.get("plugins", [raw])
    for plugin in plugins:
        if plugin["type"] == "bridge":
            plugin["bridge"] = bridge
        if plugin.get("ipam", {}).get("type"):
            plugin["ipam"]["dataDir"] = str(tmp / "ipam")
        if plugin["type"] in ("tuning", "firewall"):
            plugin["dataDir"] = str(tmp / plugin["type"])
    if "plugins" in raw:
        return NetworkConfigList.parse(raw)
    return NetworkConfigList.from_conf(raw)


def state(netns: str, names: Names) -> dict[str, Any]:
    """The snapshot, less route flags that follow carrier (linkwatch settles it later)."""
    snap = snapshot(netns, names)
    for route in snap["routes"]:
        if "flags" in route:
            route["flags"] = [f for f in route["flags"] if f != "linkdown"]
    return snap


def store(tmp: Path) -> dict[str, str]:
    """Every file the plugins keep under ``tmp`` (IPAM reservations, tuning records)."""
    return {str(p.relative_to(tmp)): p.read_text() for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != "lock"}


def nft(netns: str) -> str:
    """The nftables ruleset without handles (they count per table) and without the packet
    counters of iptables-nft rules (portmap and ipMasq default to iptables; the traffic of
    neighbour discovery varies between runs)."""
    text = ns_run(netns, "nft", "list", "ruleset").stdout
    text = re.sub(r" # handle \d+", "", text)
    return re.sub(r"counter packets \d+ bytes \d+", "counter", text)


def run_case(raw: dict[str, Any], tmp: Path, bin_dir: Path, bridge: str,
             agent_sock: Path | None) -> dict[str, Any]:
    """Negotiate, ADD, CHECK, DEL through the shims; what a user can observe at each step."""
    names = Names()
    ifname = "lo" if raw.get("plugins", [{}])[0].get("type") == "loopback" else "eth0"
    with temp_netns("h") as host_ns, temp_netns("c") as netns:
        agent = AgentProcess(host_ns, agent_sock) if agent_sock else None
        try:
            cni = CNIConfig([str(bin_dir)], str(tmp / "cache"))
            net = run_in_netns(host_ns, cni.negotiate, retarget(raw, tmp / "state", bridge))
            rt = RuntimeConf("pytcorpus1", netns, ifname,
                             capability_args={"portMappings": PORTS})
            result = run_in_netns(host_ns, cni.add_network_list, net, rt)
            out: dict[str, Any] = {
                "result": normalise_result(result.to_json(net.cni_version), names),
                "host": state(host_ns, names), "container": state(netns, names),
                "nft": nft(host_ns), "store": store(tmp / "state")}
            if not net.disable_check and parse_version(net.cni_version) >= (0, 4, 0):
                run_in_netns(host_ns, cni.check_network_list, net, rt)
            run_in_netns(host_ns, cni.delete_network_list, net, rt)
            out.update({"host after DEL": state(host_ns, names),
                        "nft after DEL": nft(host_ns),
                        "store after DEL": store(tmp / "state")})
            if agent is not None:
                served = {(c["plugin"], c["command"]) for c in agent.calls()}
                types = {p["type"] for p in net.plugins}
                assert {(t, "ADD") for t in types} <= served
                assert {(t, "DEL") for t in types} <= served
            return out
        finally:
            if agent is not None:
                agent.stop()


@pytest.mark.parametrize(("name", "raw"), cases(), ids=[c[0] for c in cases()])
def test_agent_and_standalone_agree(tmp_path: Path, name: str, raw: dict[str, Any]) -> None:
    bridge = unique_name("br")
    served_sock = tmp_path / "run" / "agent.sock"
    served = run_case(raw, tmp_path / "agent", install_shims(tmp_path / "bin-agent",
                                                              served_sock),
                      bridge, served_sock)
    alone = run_case(raw, tmp_path / "alone", install_shims(tmp_path / "bin-alone",
                                                             tmp_path / "none" / "agent.sock"),
                     bridge, None)
    # Paths under tmp differ by the mode's directory name only.
    text = json.dumps(served, indent=1, sort_keys=True).replace(str(tmp_path / "agent"), "TMP")
    expected = json.dumps(alone, indent=1, sort_keys=True).replace(str(tmp_path / "alone"), "TMP")
    assert text == expected, name
