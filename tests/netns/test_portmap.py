"""portmap with real traffic: a pod behind the Go bridge plugin, clients all around it.

Topology, all in test namespaces::

    outside netns  192.0.2.2 / 2001:db8:1::2
        | veth
    host_ns        192.0.2.1 / 2001:db8:1::1 (the "node IP"), bridge 10.x.0.1 / fd00:x::1
        | Go bridge + host-local (dual stack)
    pod netns      10.x.0.2 / fd00:x::2, a TCP+UDP echo server on POD_PORT

The echo server answers ``<tag>|<peer address>`` so tests see who the pod thought called
(the masquerade of hairpin and localhost connections shows there). portmap runs in-process
with host_ns as its host namespace, chained behind the bridge plugin's result.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycni.host.netfilter import _nft
from pycni.testing import (
    GO_PLUGIN_DIR,
    call_plugin,
    cni_env,
    exec_plugin_in,
    ns_run,
    temp_netns,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.netns

NODE4, NODE6 = "192.0.2.1", "2001:db8:1::1"
OUTSIDE4, OUTSIDE6 = "192.0.2.2", "2001:db8:1::2"
POD_PORT = 8080
NET = "pytnet"

SERVER = textwrap.dedent('''
    import socket, sys, threading
    port, tag = int(sys.argv[1]), sys.argv[2]

    def peer(addr):
        host = addr[0]
        return host[7:] if host.startswith("::ffff:") else host

    def udp():
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        while True:
            data, addr = s.recvfrom(1024)
            s.sendto(f"{tag}|{peer(addr)}".encode(), addr)

    threading.Thread(target=udp, daemon=True).start()
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("::", port))
    t.listen(16)
    print("ready", flush=True)
    while True:
        c, addr = t.accept()
        c.recv(1024)
        c.sendall(f"{tag}|{peer(addr)}".encode())
        c.close()
''')

CLIENT = textwrap.dedent('''
    import socket, sys
    proto, host, port, sport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=2)
        s.sendall(b"hi")
        print(s.recv(1024).decode())
        sys.exit(0)
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport:
        s.bind(("", sport))
    s.connect((host, port))
    s.settimeout(0.4)
    for _ in range(int(sys.argv[5])):
        try:
            s.send(b"hi")
            print(s.recv(1024).decode())
            sys.exit(0)
        except OSError:
            pass
    sys.exit(1)
''')


@dataclass
class Lab:
    """The namespaces, the pod's addresses and its bridge result."""

    host: str
    outside: str
    pod: str
    prev: dict[str, Any]
    pod4: str
    pod6: str
    gw4: str
    bridge: str
    uplink: str
    scripts: Path
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def client(self, netns: str, proto: str, host: str, port: int, *, sport: int = 0,
               tries: int = 5) -> str | None:
        """One request from ``netns``; the server's answer or None."""
        proc = ns_run(netns, sys.executable, str(self.scripts / "client.py"), proto, host,
                      str(port), str(sport), str(tries))
        return proc.stdout.strip() if proc.returncode == 0 else None

    def reaches(self, netns: str, proto: str, host: str, port: int) -> str | None:
        """Like :meth:`client`, retried for a few seconds (IPv6 DAD, neighbour discovery)."""
        return wait_for(lambda: self.client(netns, proto, host, port), timeout=6)


def _ip(ns: str, *argv: str) -> None:
    ns_run(ns, "ip", *argv, check=True)


@pytest.fixture
def lab(host_ns: str, netns: str, tmp_path: Path, go_plugins: str) -> Iterator[Lab]:
    """host_ns with an outside neighbour and one dual-stack pod running the echo server."""
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    x = random.randint(1, 250)  # noqa: S311 - a test subnet, not a secret
    with temp_netns("o") as outside:
        host_if, out_if = unique_name("ho"), unique_name("op")
        _ip(host_ns, "link", "add", host_if, "type", "veth", "peer", "name", out_if,
            "netns", outside)
        for ns, ifname, v4, v6 in ((host_ns, host_if, NODE4, NODE6),
                                   (outside, out_if, OUTSIDE4, OUTSIDE6)):
            _ip(ns, "link", "set", "lo", "up")
            _ip(ns, "addr", "add", f"{v4}/24", "dev", ifname)
            _ip(ns, "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
            _ip(ns, "link", "set", ifname, "up")
        bridge = unique_name("br")
        conf = {"cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": bridge,
                "isGateway": True, "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                         "ranges": [[{"subnet": f"10.{x}.0.0/24"}], [{"subnet": f"fd00:{x}::/64"}]],
                         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}
        prev = exec_plugin_in(host_ns, f"{go_plugins}/bridge",
                              cni_env("ADD", container_id="pod1", netns=netns), conf).ok()
        addrs = {ipaddress.ip_interface(ip["address"]).version: ip for ip in prev["ips"]}
        lab = Lab(host=host_ns, outside=outside, pod=netns, prev=prev,
                  pod4=str(ipaddress.ip_interface(addrs[4]["address"]).ip),
                  pod6=str(ipaddress.ip_interface(addrs[6]["address"]).ip),
                  gw4=addrs[4]["gateway"], bridge=bridge, uplink=host_if, scripts=tmp_path)
        try:
            lab.servers.append(start_server(lab, netns, "pod"))
            yield lab
        finally:
            for proc in lab.servers:
                proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()


def start_server(lab: Lab, netns: str, tag: str) -> subprocess.Popen[str]:
    """The echo server in ``netns`` on POD_PORT (TCP and UDP, both families)."""
    proc = subprocess.Popen(["nsenter", f"--net={netns}", "--", sys.executable,
                             str(lab.scripts / "server.py"), str(POD_PORT), tag],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture(params=["nftables", "iptables", "nftables-cli"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each backend; ``nftables-cli`` is nftables with libnftables hidden (the nft fallback)."""
    name = str(request.param)
    if name == "nftables-cli":
        monkeypatch.setattr(_nft, "_library", lambda: None)
        return "nftables"
    return name


def pm_conf(backend: str, mappings: list[dict[str, Any]], prev: dict[str, Any] | None,
            **extra: Any) -> dict[str, Any]:
    """A portmap config as the runtime passes it (capability args in runtimeConfig)."""
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": NET, "type": "portmap",
                            "backend": backend, "capabilities": {"portMappings": True},
                            "runtimeConfig": {"portMappings": mappings}, **extra}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def portmap(lab: Lab, command: str, conf: dict[str, Any], cid: str = "pod1") -> Any:
    """Run our portmap in lab.host; the parsed output (AssertionError on failure)."""
    env = cni_env(command, container_id=cid, netns=lab.pod)
    return call_plugin(lab.host, "portmap", env, conf).ok()


def tcp_udp(host_port: int, host_ip: str = "") -> list[dict[str, Any]]:
    """A TCP and a UDP mapping of ``host_port`` to the pod's echo port."""
    out = [{"hostPort": host_port, "containerPort": POD_PORT, "protocol": proto}
           for proto in ("tcp", "udp")]
    if host_ip:
        for m in out:
            m["hostIP"] = host_ip
    return out


def test_traffic_from_everywhere(lab: Lab, backend: str) -> None:
    """TCP and UDP through the host port: from outside, node IP, 127.0.0.1, hairpin, IPv6."""
    result = portmap(lab, "ADD", pm_conf(backend, tcp_udp(9000), lab.prev))
    assert result == lab.prev
    for proto in ("tcp", "udp"):
        # From another host: the pod sees the real client address (no SNAT needed).
        assert lab.reaches(lab.outside, proto, NODE4, 9000) == f"pod|{OUTSIDE4}"
        assert lab.reaches(lab.outside, proto, NODE6, 9000) == f"pod|{OUTSIDE6}"
        # From the node itself, to its own address.
        assert lab.reaches(lab.host, proto, NODE4, 9000) == f"pod|{NODE4}"
        assert lab.reaches(lab.host, proto, NODE6, 9000) == f"pod|{NODE6}"
        # From 127.0.0.1: route_localnet lets it out, masquerade gives it the bridge address.
        assert lab.reaches(lab.host, proto, "127.0.0.1", 9000) == f"pod|{lab.gw4}"
        # Hairpin: the pod reaches itself through the node IP, masqueraded to the gateway.
        assert lab.reaches(lab.pod, proto, NODE4, 9000) == f"pod|{lab.gw4}"
    route_localnet = ns_run(lab.host, "sysctl", "-n",
                            f"net.ipv4.conf.{lab.bridge}.route_localnet").stdout.strip()
    assert route_localnet == "1"
    portmap(lab, "CHECK", pm_conf(backend, tcp_udp(9000), lab.prev))

    portmap(lab, "DEL", pm_conf(backend, tcp_udp(9000), None))
    assert lab.client(lab.outside, "tcp", NODE4, 9000) is None
    assert lab.client(lab.host, "udp", "127.0.0.1", 9000, tries=2) is None
    portmap(lab, "DEL", pm_conf(backend, tcp_udp(9000), None))  # idempotent


def test_snat_false_still_forwards_from_outside(lab: Lab, backend: str) -> None:
    """snat off: no masquerade rules, outside traffic still mapped; hairpin does not work."""
    portmap(lab, "ADD", pm_conf(backend, tcp_udp(9001), lab.prev, snat=False))
    assert lab.reaches(lab.outside, "tcp", NODE4, 9001) == f"pod|{OUTSIDE4}"
    assert lab.client(lab.pod, "tcp", NODE4, 9001) is None
    portmap(lab, "CHECK", pm_conf(backend, tcp_udp(9001), lab.prev, snat=False))


def test_masq_all_masquerades_outside_clients(lab: Lab, backend: str) -> None:
    """masqAll: even a connection from another host arrives from the gateway address."""
    portmap(lab, "ADD", pm_conf(backend, tcp_udp(9002), lab.prev, masqAll=True))
    assert lab.reaches(lab.outside, "tcp", NODE4, 9002) == f"pod|{lab.gw4}"
    assert lab.reaches(lab.pod, "tcp", NODE4, 9002) == f"pod|{lab.gw4}"


def test_host_ip_restricts_the_mapping(lab: Lab, backend: str) -> None:
    """With hostIP, only that address forwards; another local address does not."""
    _ip(lab.host, "addr", "add", "192.0.2.10/24", "dev", lab.uplink)
    mappings = [*tcp_udp(9003, host_ip=NODE4),
                {"hostPort": 9004, "containerPort": POD_PORT, "protocol": "tcp",
                 "hostIP": NODE6}]
    portmap(lab, "ADD", pm_conf(backend, mappings, lab.prev))
    assert lab.reaches(lab.outside, "tcp", NODE4, 9003) == f"pod|{OUTSIDE4}"
    assert lab.reaches(lab.outside, "udp", NODE4, 9003) == f"pod|{OUTSIDE4}"
    assert lab.client(lab.outside, "tcp", "192.0.2.10", 9003) is None
    # An IPv6 hostIP maps only over IPv6.
    assert lab.reaches(lab.outside, "tcp", NODE6, 9004) == f"pod|{OUTSIDE6}"
    assert lab.client(lab.outside, "tcp", NODE4, 9004) is None
    portmap(lab, "CHECK", pm_conf(backend, mappings, lab.prev))


def test_stale_udp_conntrack_entry_is_flushed_on_add(lab: Lab, backend: str) -> None:
    """A UDP flow that hit the host port before the mapping existed reaches the pod after ADD."""
    # Some NAT rule makes the kernel track connections in host_ns (any mapping does).
    portmap(lab, "ADD", pm_conf(backend, [{"hostPort": 9100, "containerPort": POD_PORT}],
                                lab.prev), cid="other")
    # The flow, from a fixed source port: nothing listens on the node, so no answer; the
    # conntrack entry stays (UNREPLIED, without NAT) while packets keep coming.
    assert lab.client(lab.outside, "udp", NODE4, 9005, sport=40123, tries=2) is None
    entries = ns_run(lab.host, "conntrack", "-L", "-p", "udp", "--dport", "9005").stdout
    assert "sport=40123" in entries
    portmap(lab, "ADD", pm_conf(backend, tcp_udp(9005), lab.prev))
    assert lab.client(lab.outside, "udp", NODE4, 9005, sport=40123) == f"pod|{OUTSIDE4}"


def test_del_needs_no_prev_result_and_removes_only_its_own(lab: Lab, backend: str) -> None:
    """Two containers on the pod address: DEL of one leaves the other's mapping working."""
    portmap(lab, "ADD", pm_conf(backend, tcp_udp(9006), lab.prev), cid="a")
    portmap(lab, "ADD", pm_conf(backend, tcp_udp(9007), lab.prev), cid="b")
    portmap(lab, "DEL", pm_conf(backend, [], None), cid="a")
    assert lab.client(lab.outside, "tcp", NODE4, 9006) is None
    assert lab.reaches(lab.outside, "tcp", NODE4, 9007) == f"pod|{OUTSIDE4}"
    env = cni_env("CHECK", container_id="a", netns=lab.pod)
    assert call_plugin(lab.host, "portmap", env, pm_conf(backend, tcp_udp(9006), lab.prev)
                       ).status == 1
    portmap(lab, "CHECK", pm_conf(backend, tcp_udp(9007), lab.prev), cid="b")


def test_gc_removes_attachments_not_valid(lab: Lab, backend: str) -> None:
    """GC (1.1.0) keeps the valid attachment's rules and removes the other's."""
    portmap(lab, "ADD", pm_conf(backend, tcp_udp(9008), lab.prev), cid="keep")
    portmap(lab, "ADD", pm_conf(backend, tcp_udp(9009), lab.prev), cid="gone")
    gc = {"cniVersion": "1.1.0", "name": NET, "type": "portmap", "backend": backend,
          "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    call_plugin(lab.host, "portmap", {"CNI_COMMAND": "GC", "CNI_PATH": GO_PLUGIN_DIR}, gc).ok()
    assert lab.reaches(lab.outside, "tcp", NODE4, 9008) == f"pod|{OUTSIDE4}"
    assert lab.client(lab.outside, "tcp", NODE4, 9009) is None
    portmap(lab, "CHECK", pm_conf(backend, tcp_udp(9008), lab.prev), cid="keep")


def test_concurrent_adds_all_land(lab: Lab, backend: str) -> None:
    """Twenty ADDs at once (threads, each in host_ns): every mapping works afterwards."""
    ports = list(range(9200, 9220))

    def add(port: int) -> int:
        env = cni_env("ADD", container_id=f"c{port}", netns=lab.pod)
        conf = pm_conf(backend, [{"hostPort": port, "containerPort": POD_PORT}], lab.prev)
        return call_plugin(lab.host, "portmap", env, conf).status

    with ThreadPoolExecutor(max_workers=len(ports)) as pool:
        assert list(pool.map(add, ports)) == [0] * len(ports)
    for port in ports:
        assert lab.reaches(lab.outside, "tcp", NODE4, port) == f"pod|{OUTSIDE4}"


def test_sctp_mapping_is_written(lab: Lab, backend: str) -> None:
    """sctp mappings are accepted and CHECKed like tcp/udp (no sctp client here)."""
    conf = pm_conf(backend, [{"hostPort": 9010, "containerPort": POD_PORT, "protocol": "SCTP"}],
                   lab.prev)
    portmap(lab, "ADD", conf)
    portmap(lab, "CHECK", conf)
    text = (ns_run(lab.host, "nft", "list", "ruleset").stdout if backend == "nftables"
            else ns_run(lab.host, "iptables-save", "-t", "nat").stdout)
    assert "sctp" in text
    assert "9010" in text
