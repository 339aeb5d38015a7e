"""podman 4.3 (CNI backend) runs containers on pycni's installed plugins, end to end.

A real runtime does what a plugin's own tests may not: it runs a chain (bridge + host-local,
portmap, firewall, tuning at cniVersion 0.4.0, as ``podman network create`` writes it), passes
runtimeConfig (port mappings), reads results back from libcni's cache for DEL, tears a
network down on stop and again on removal, and shows what the plugins returned in
``podman inspect``. The tests run on the executables ``pycni install`` writes (running the
plugin in-process, and forwarding to a ``pycni agent``) and on the Go reference plugins in
/usr/lib/cni, which proves the tests themselves right. Wrappers that log each call show the
protocol podman speaks (VERSION probes, chain order, DEL before a re-ADD); a last test
switches a node from Go's plugins to pycni's with containers running.

podman runs inside a test host namespace with private config and storage (see podman_env).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from podman_env import (
    Network,
    Podman,
    agent_calls,
    cache_entries,
    http_hostname_from,
    http_hostname_in_ns,
    install_pycni,
    missing_tools,
    netfilter_dump,
    podman_sandbox,
    reservations,
)

from pycni.testing import GO_PLUGIN_DIR, ip_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PORT_V4 = 8080
PORT_DUAL = 8081
DUAL_SUBNETS = ("10.231.7.0/24", "fd00:231:7::/64")


@contextmanager
def _sandbox(kind: str, *, logged: bool = False) -> Iterator[Podman]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")
    plugin_dir = None  # pycni's executables (with a pycni agent or without)
    if kind == "go":
        if not (Path(GO_PLUGIN_DIR) / "bridge").exists():
            pytest.skip("containernetworking-plugins is not installed (/usr/lib/cni)")
        plugin_dir = GO_PLUGIN_DIR
    with podman_sandbox(plugin_dir, logged=logged, agent=kind == "pycni-agent") as sandbox:
        yield sandbox


@pytest.fixture(scope="module", params=["pycni", "pycni-agent", "go"])
def podman(request: pytest.FixtureRequest) -> Iterator[Podman]:
    """podman in a sandbox, on pycni's installed executables (running in-process, or
    forwarding to a pycni agent) or on Go's plugins."""
    with _sandbox(request.param) as sandbox:
        yield sandbox


@dataclass
class Pod:
    """A network with a web container (port published) and a client container."""

    network: Network
    web: str
    client: str
    port: int


def _pod(podman: Podman, network: Network, port: int) -> Pod:
    web = podman.start(network, "-p", f"{port}:80")
    client = podman.start(network, cmd=("/bin/sleep", "3600"))
    return Pod(network, web, client, port)


@pytest.fixture(scope="module")
def ipv4(podman: Podman) -> Pod:
    """podman's default kind of network (it picks the subnet)."""
    return _pod(podman, podman.create_network(), PORT_V4)


@pytest.fixture(scope="module")
def dual(podman: Podman) -> Pod:
    """A dual-stack network (``--ipv6`` with one subnet per family)."""
    args = ["--ipv6"] + [f"--subnet={s}" for s in DUAL_SUBNETS]
    return _pod(podman, podman.create_network(*args), PORT_DUAL)


def _settings(podman: Podman, cid: str, network: Network) -> Any:
    return podman.inspect(cid)["NetworkSettings"]["Networks"][network.name]


def _ips(podman: Podman, cid: str, network: Network) -> list[str]:
    found = _settings(podman, cid, network)
    return [ip for ip in (found["IPAddress"], found["GlobalIPv6Address"]) if ip]


def _gateways(podman: Podman, network: Network) -> list[str]:
    (info,) = podman.json("network", "inspect", network.name)
    return [s["gateway"] for s in info["subnets"]]


def _ping(podman: Podman, cid: str, ip: str) -> None:
    proc = podman.exec(cid, "ping", "-c", "1", "-W", "5", ip)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def _container_addrs(netns: str, ifname: str = "eth0") -> set[str]:
    (link,) = ip_json(netns, "addr", "show", "dev", ifname)
    return {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
            if a.get("scope") == "global"}


# -- the conflist podman generates -------------------------------------------------------------

def test_generated_conflist_is_podmans_chain(ipv4: Pod) -> None:
    config = ipv4.network.config()
    assert config["cniVersion"] == "0.4.0"
    assert [p["type"] for p in config["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    bridge = config["plugins"][0]
    assert bridge["ipam"]["type"] == "host-local"
    assert (bridge["isGateway"], bridge["ipMasq"], bridge["hairpinMode"]) == (True, True, True)
    assert config["plugins"][1]["capabilities"] == {"portMappings": True}


def test_network_inspect_shows_the_bridge(podman: Podman, ipv4: Pod, dual: Pod) -> None:
    for pod in (ipv4, dual):
        (info,) = podman.json("network", "inspect", pod.network.name)
        assert info["network_interface"] == pod.network.bridge
        (link,) = ip_json(podman.host_ns, "addr", "show", "dev", pod.network.bridge)
        on_bridge = {a["local"] for a in link["addr_info"] if a.get("scope") == "global"}
        assert set(_gateways(podman, pod.network)) <= on_bridge
    (info,) = podman.json("network", "inspect", dual.network.name)
    assert info["ipv6_enabled"]
    assert sorted(s["subnet"] for s in info["subnets"]) == sorted(DUAL_SUBNETS)


def test_the_agent_serves_the_calls(podman: Podman, ipv4: Pod,
                                    request: pytest.FixtureRequest) -> None:
    """With an agent the installed executables forward to it; without one they run alone."""
    log = podman.base / "agent.log"
    if request.node.callspec.params["podman"] != "pycni-agent":
        assert not log.exists()
        return
    served = set(agent_calls(log))
    # host-local is no call of its own: bridge runs a pycni IPAM type in-process.
    assert {(t, "ADD") for t in ("bridge", "portmap", "firewall", "tuning")} <= served
    assert ("bridge", "VERSION") in served


# -- what podman shows is what the plugins returned -------------------------------------------

@pytest.mark.parametrize("which", ["ipv4", "dual"])
def test_inspect_shows_the_plugins_result(podman: Podman, which: str,
                                          request: pytest.FixtureRequest) -> None:
    pod: Pod = request.getfixturevalue(which)
    for cid in (pod.web, pod.client):
        settings = _settings(podman, cid, pod.network)
        # The chain's final result, as libcni cached it for DEL.
        (cached,) = cache_entries(f"{pod.network.name}-{cid}")
        result = json.loads(cached.read_text())["result"]
        returned = {ip.get("address") for ip in result["ips"]}
        shown = {f"{settings['IPAddress']}/{settings['IPPrefixLen']}"}
        if settings["GlobalIPv6Address"]:
            shown.add(f"{settings['GlobalIPv6Address']}/{settings['GlobalIPv6PrefixLen']}")
        assert shown == returned
        eth0 = [i for i in result["interfaces"] if i.get("sandbox")]
        assert [i["mac"] for i in eth0] == [settings["MacAddress"]]
        assert {settings["Gateway"], settings["IPv6Gateway"]} - {""} == {
            ip["gateway"] for ip in result["ips"]}
        # ...and it is what the kernel has and what host-local reserved.
        assert _container_addrs(podman.sandbox(cid)) == shown
        assert set(_ips(podman, cid, pod.network)) <= set(reservations(pod.network.name))
    assert len(shown) == (2 if which == "dual" else 1)


# -- traffic ------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["ipv4", "dual"])
def test_containers_reach_each_other(podman: Podman, which: str,
                                     request: pytest.FixtureRequest) -> None:
    pod: Pod = request.getfixturevalue(which)
    for src, dst in ((pod.client, pod.web), (pod.web, pod.client)):
        for ip in _ips(podman, dst, pod.network):
            _ping(podman, src, ip)
    for ip in _ips(podman, pod.web, pod.network):
        assert http_hostname_from(podman, pod.client, ip, 80) == pod.web[:12]


@pytest.mark.parametrize("which", ["ipv4", "dual"])
@pytest.mark.parametrize("source", ["host-loopback", "host-bridge", "other-container",
                                    "hairpin"])
def test_published_port_answers(podman: Podman, which: str, source: str,
                                request: pytest.FixtureRequest) -> None:
    pod: Pod = request.getfixturevalue(which)
    gateways = _gateways(podman, pod.network)
    if source == "host-loopback":
        # IPv6 has no route_localnet: [::1] cannot be DNATed to a container, by any plugin.
        answers = [http_hostname_in_ns(podman.host_ns, "127.0.0.1", pod.port)]
    elif source == "host-bridge":
        answers = [http_hostname_in_ns(podman.host_ns, gw, pod.port) for gw in gateways]
    else:
        cid = pod.client if source == "other-container" else pod.web
        answers = [http_hostname_from(podman, cid, gw, pod.port) for gw in gateways]
    assert answers == [pod.web[:12]] * len(answers)


# -- teardown -----------------------------------------------------------------------------------

def _veths(netns: str) -> set[str]:
    return {link["ifname"] for link in ip_json(netns, "link", "show", "type", "veth")}


def _mentions(text: str, words: list[str]) -> list[str]:
    return [w for w in words if w in text]


def test_stop_start_rm_and_network_rm_leave_nothing(podman: Podman) -> None:
    veths_before = _veths(podman.host_ns)
    network = podman.create_network("--ipv6", "--subnet=10.231.9.0/24",
                                    "--subnet=fd00:231:9::/64")
    pod = _pod(podman, network, 8090)
    cids = [pod.web, pod.client]
    sandboxes = [podman.sandbox(cid) for cid in cids]
    ips = [ip for cid in cids for ip in _ips(podman, cid, network)]
    assert len(ips) == 4
    assert sorted(reservations(network.name)) == sorted(ips)
    bridge_ports = ip_json(podman.host_ns, "link", "show", "master", network.bridge)
    assert len(bridge_ports) == 2
    # The rules name the network (comments), the containers and their addresses.
    words = [network.name, *cids, *ips]
    assert _mentions(netfilter_dump(podman.host_ns), words)

    # stop: podman tears the network down (DEL); start sets it up again (ADD).
    podman.run("stop", "-t", "0", pod.web)
    assert not Path(sandboxes[0]).exists()
    assert len(ip_json(podman.host_ns, "link", "show", "master", network.bridge)) == 1
    assert len(reservations(network.name)) == 2
    podman.run("start", pod.web)
    assert http_hostname_in_ns(podman.host_ns, "127.0.0.1", pod.port) == pod.web[:12]
    ips += _ips(podman, pod.web, network)
    sandboxes.append(podman.sandbox(pod.web))

    podman.run("rm", "-f", "-t", "0", *cids)
    assert ip_json(podman.host_ns, "link", "show", "master", network.bridge) == []
    assert _veths(podman.host_ns) == veths_before
    assert reservations(network.name) == []
    assert cache_entries(network.name) == []
    assert [s for s in sandboxes if Path(s).exists()] == []
    assert _mentions(netfilter_dump(podman.host_ns), words + ips) == []

    podman.run("network", "rm", network.name)
    assert not network.conflist.exists()
    assert not any(link["ifname"] == network.bridge
                   for link in ip_json(podman.host_ns, "link", "show"))
    subnets = [ipaddress.ip_network(s) for s in ("10.231.9.0/24", "fd00:231:9::/64")]
    addrs = [a["local"] for link in ip_json(podman.host_ns, "addr", "show")
             for a in link["addr_info"]]
    assert [a for a in addrs if any(ipaddress.ip_address(a) in n for n in subnets)] == []
    assert reservations(network.name) == []


# -- the protocol podman speaks ------------------------------------------------------------------

CHAIN_ADD = ["bridge", "host-local", "portmap", "firewall", "tuning"]
CHAIN_DEL = ["tuning", "firewall", "portmap", "bridge", "host-local"]


@pytest.fixture(params=["pycni", "go"])
def logged(request: pytest.FixtureRequest) -> Iterator[Podman]:
    """podman whose plugin calls are logged (wrappers around the real executables)."""
    with _sandbox(request.param, logged=True) as sandbox:
        yield sandbox


def _since(podman: Podman, mark: int, command: str) -> list[str]:
    return [plugin for plugin, cmd, _ in podman.calls()[mark:] if cmd == command]


def test_version_probe_chain_order_restart_reload_and_exit(logged: Podman) -> None:
    podman = logged
    network = podman.create_network()
    web = podman.start(network, "-p", "8085:80")
    # podman asks every plugin of the chain for VERSION (with a dummy netns) when it loads
    # the network, and drops a network whose plugins don't answer right.
    calls = podman.calls()
    first_add = next(i for i, c in enumerate(calls) if c[1] == "ADD")
    assert {p for p, cmd, _ in calls[:first_add] if cmd == "VERSION"} == {
        "bridge", "portmap", "firewall", "tuning"}
    assert _since(podman, 0, "ADD") == CHAIN_ADD
    netns = {ns for _, cmd, ns in calls if cmd == "ADD"}
    assert netns == {podman.sandbox(web)}

    # restart: DEL (prevResult from libcni's cache) then ADD in a new netns.
    for argv in (("restart", "-t", "0", web), ("network", "reload", web)):
        mark = len(podman.calls())
        podman.run(*argv)
        assert _since(podman, mark, "DEL") == CHAIN_DEL
        assert _since(podman, mark, "ADD") == CHAIN_ADD
        assert http_hostname_in_ns(podman.host_ns, "127.0.0.1", 8085) == web[:12]
        assert len(reservations(network.name)) == 1

    # A container that exits by itself: conmon's exit command ("podman container cleanup")
    # tears its network down.
    short = podman.start(network, cmd=("/bin/true",))
    podman.run("wait", short)
    assert wait_for(lambda: len(reservations(network.name)) == 1, timeout=30)
    assert wait_for(lambda: len(_veths(podman.host_ns)) == 1, timeout=30)
    podman.run("rm", "-f", "-t", "0", web, short)
    assert reservations(network.name) == []
    assert _veths(podman.host_ns) == set()


# -- switching a node ---------------------------------------------------------------------------

def test_switch_from_go_to_pycni_with_containers_running() -> None:
    """README's recipe: point cni_plugin_dirs at pycni's executables, keep the conflists and
    the running containers; pycni tears down what the Go plugins set up."""
    with _sandbox("go") as podman:
        veths_before = _veths(podman.host_ns)
        network = podman.create_network()
        web = podman.start(network, "-p", "8086:80")
        client = podman.start(network, cmd=("/bin/sleep", "3600"))
        ips = [ip for cid in (web, client) for ip in _ips(podman, cid, network)]
        install_pycni(podman.base / "pycni", podman.base / "agent.sock")
        podman.plugin_dir = str(podman.base / "pycni")
        podman.write_config()

        assert http_hostname_in_ns(podman.host_ns, "127.0.0.1", 8086) == web[:12]
        podman.run("restart", "-t", "0", web)  # DEL by pycni of Go's ADD, then pycni's ADD
        assert http_hostname_from(podman, client, _gateways(podman, network)[0],
                                  8086) == web[:12]
        ips += _ips(podman, web, network)
        podman.run("rm", "-f", "-t", "0", web, client)
        assert reservations(network.name) == []
        assert _veths(podman.host_ns) == veths_before
        assert _mentions(netfilter_dump(podman.host_ns), [network.name, web, client, *ips]) == []
