"""Masquerade backends against the kernel, in a test host namespace.

Rules are read back with iptables-save / ``nft -j`` inside the host namespace; SNAT is shown
with real datagrams from a container namespace, through the host namespace, to an "outside"
namespace whose listener sees which source address arrives.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycni.host import run_in_netns
from pycni.host.netfilter import _nft, masq
from pycni.spec import KernelError
from pycni.testing import cni_env, exec_plugin_in, ns_run, temp_netns, unique_name

pytestmark = pytest.mark.netns

NET = "masqnet"
V4 = ipaddress.ip_interface("10.99.0.2/24")
V6 = ipaddress.ip_interface("fd99::2/64")
IPS = [V4, V6]


def _normalise(text: str) -> list[str]:
    """Ruleset text without timestamps or counters (they change with any traffic)."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        plain = re.sub(r"\[\d+:\d+\]", "[0:0]", line)
        out.append(re.sub(r"counter packets \d+ bytes \d+", "counter", plain))
    return out


def _root_firewall() -> list[str]:
    state = []
    for argv in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        state += [f"{argv[0]}: {line}" for line in _normalise(proc.stdout)]
    return state


@pytest.fixture(scope="module", autouse=True)
def _root_namespace_untouched() -> Iterator[None]:
    """Every test here works in its own namespaces: the machine's firewall must not change."""
    before = _root_firewall()
    yield
    assert _root_firewall() == before


@pytest.fixture(params=["iptables", "nftables", "nftables-cli"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each backend; ``nftables-cli`` is nftables with libnftables hidden (``nft -j -f -``)."""
    name = str(request.param)
    if name == "nftables-cli":
        monkeypatch.setattr(_nft, "_library", lambda: None)
        return "nftables"
    return name


def _in(ns: str, fn: Callable[..., Any], *args: Any) -> Any:
    return run_in_netns(ns, fn, *args)


def _iptables(ns: str, family: int = 4) -> list[str]:
    """The nat rules (``-A`` lines) in ``ns``."""
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    out = ns_run(ns, tool, "-t", "nat", check=True).stdout
    return [line for line in _normalise(out) if line.startswith(("-A", ":CNI-"))]


def _nft_rules(ns: str) -> list[dict[str, Any]]:
    """The rules of our nftables chain in ``ns`` (empty if the table is absent)."""
    out = ns_run(ns, "nft", "-j", "list", "ruleset", check=True).stdout
    return [item["rule"] for item in json.loads(out)["nftables"]
            if "rule" in item and item["rule"]["table"] == "cni_plugins_masquerade"
            and item["rule"]["chain"] == "masq_checks"]


def _masq_state(ns: str) -> list[str]:
    """Everything masquerade-related in ``ns``, from both tools."""
    state = [f"v{f}: {line}" for f in (4, 6) for line in _iptables(ns, f)]
    return state + [f"nft: {_source(r)} {r.get('comment')}" for r in _nft_rules(ns)]


def _source(rule: dict[str, Any]) -> str:
    return str(rule["expr"][0]["match"]["right"])


def _sources(rules: list[dict[str, Any]]) -> set[str]:
    return {_source(r) for r in rules}


def test_iptables_setup_writes_reference_rules(host_ns: str) -> None:
    _in(host_ns, masq.setup_ip_masq, "iptables", NET, "c1", "eth0", IPS)
    chain = masq.chain_name(NET, "c1")
    comment = '"name: \\"masqnet\\" id: \\"c1\\""'
    assert _iptables(host_ns, 4) == [
        f":{chain} - [0:0]",
        f"-A POSTROUTING -s 10.99.0.2/32 -m comment --comment {comment} -j {chain}",
        f"-A {chain} -d 10.99.0.0/24 -m comment --comment {comment} -j ACCEPT",
        f"-A {chain} ! -d 224.0.0.0/4 -m comment --comment {comment} -j MASQUERADE",
    ]
    assert _iptables(host_ns, 6) == [
        f":{chain} - [0:0]",
        f"-A POSTROUTING -s fd99::2/128 -m comment --comment {comment} -j {chain}",
        f"-A {chain} -d fd99::/64 -m comment --comment {comment} -j ACCEPT",
        f"-A {chain} ! -d ff00::/8 -m comment --comment {comment} -j MASQUERADE",
    ]
    assert _nft_rules(host_ns) == []


def test_nftables_setup_writes_reference_rules(host_ns: str) -> None:
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", IPS)
    listing = ns_run(host_ns, "nft", "list", "table", "inet", "cni_plugins_masquerade",
                     check=True).stdout
    comment = masq.nftables.rule_comment(NET, "c1", "eth0")
    assert [line.strip() for line in listing.splitlines() if line.strip()] == [
        "table inet cni_plugins_masquerade {",
        "chain masq_checks {",
        f'ip saddr 10.99.0.2 ip daddr != 10.99.0.0/24 masquerade comment "{comment}"',
        f'ip6 saddr fd99::2 ip6 daddr != fd99::/64 masquerade comment "{comment}"',
        "}",
        "chain postrouting {",
        "type nat hook postrouting priority srcnat; policy accept;",
        "ip daddr 224.0.0.0/4 return",
        "ip6 daddr ff00::/8 return",
        "goto masq_checks",
        "}",
        "}",
    ]
    assert _iptables(host_ns) == []


def test_setup_twice_is_setup_once(host_ns: str, backend: str) -> None:
    _in(host_ns, masq.setup_ip_masq, backend, NET, "c1", "eth0", IPS)
    once = _masq_state(host_ns)
    _in(host_ns, masq.setup_ip_masq, backend, NET, "c1", "eth0", IPS)
    assert _masq_state(host_ns) == once


def test_nftables_setup_again_replaces_addresses(host_ns: str) -> None:
    # nftables rules carry the ifname, so a new ADD of the attachment replaces its rules.
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", IPS)
    new = ipaddress.ip_interface("10.99.0.7/24")
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", [new])
    assert _sources(_nft_rules(host_ns)) == {"10.99.0.7"}


def test_iptables_setup_keeps_sibling_interfaces(host_ns: str) -> None:
    # The iptables chain is per (network, container), shared by all its ifnames (upstream's
    # layout), so setup only adds; teardown removes the chain as a whole.
    sibling = ipaddress.ip_interface("10.98.0.5/16")
    _in(host_ns, masq.setup_ip_masq, "iptables", NET, "c1", "eth0", [V4])
    _in(host_ns, masq.setup_ip_masq, "iptables", NET, "c1", "net1", [sibling])
    state = "\n".join(_iptables(host_ns))
    assert "-s 10.99.0.2/32" in state
    assert "-s 10.98.0.5/32" in state
    _in(host_ns, masq.teardown_ip_masq, "iptables", NET, "c1", "eth0", None)
    assert _masq_state(host_ns) == []


def test_two_subnets_accept_before_masquerade(host_ns: str) -> None:
    second = ipaddress.ip_interface("10.98.0.5/16")
    _in(host_ns, masq.setup_ip_masq, "iptables", NET, "c1", "eth0", [V4, second])
    targets = [line.rsplit(" ", 1)[-1] for line in _iptables(host_ns)
               if line.startswith(f"-A {masq.chain_name(NET, 'c1')}")]
    assert targets == ["ACCEPT", "ACCEPT", "MASQUERADE"]


@pytest.mark.parametrize("with_ips", [True, False], ids=["with-ips", "without-ips"])
def test_teardown_removes_everything_and_is_idempotent(host_ns: str, backend: str,
                                                       with_ips: bool) -> None:
    _in(host_ns, masq.setup_ip_masq, backend, NET, "other", "eth0", [V4])
    keep = _masq_state(host_ns)
    _in(host_ns, masq.setup_ip_masq, backend, NET, "c1", "eth0", IPS)
    assert _masq_state(host_ns) != keep
    ips = IPS if with_ips else None
    _in(host_ns, masq.teardown_ip_masq, backend, NET, "c1", "eth0", ips)
    assert _masq_state(host_ns) == keep
    _in(host_ns, masq.teardown_ip_masq, backend, NET, "c1", "eth0", ips)
    assert _masq_state(host_ns) == keep


def test_teardown_on_a_clean_host_creates_nothing(host_ns: str) -> None:
    _in(host_ns, masq.teardown_ip_masq, "", NET, "c1", "eth0", None)
    _in(host_ns, masq.gc_ip_masq, NET, [])
    assert ns_run(host_ns, "nft", "list", "ruleset", check=True).stdout.strip() == ""


def test_teardown_cleans_the_other_backend_too(host_ns: str) -> None:
    _in(host_ns, masq.setup_ip_masq, "iptables", NET, "c1", "eth0", IPS)
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", IPS)
    _in(host_ns, masq.teardown_ip_masq, "nftables", NET, "c1", "eth0", None)
    assert _masq_state(host_ns) == []


def test_nftables_teardown_keeps_other_ifnames(host_ns: str) -> None:
    v4b = ipaddress.ip_interface("10.99.1.2/24")
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", [V4])
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "net1", [v4b])
    _in(host_ns, masq.teardown_ip_masq, "nftables", NET, "c1", "eth0", None)
    assert _sources(_nft_rules(host_ns)) == {"10.99.1.2"}


def test_gc_keeps_valid_attachments_only(host_ns: str, backend: str) -> None:
    for i, cid in enumerate(["keep", "drop1", "drop2"]):
        ip = ipaddress.ip_interface(f"10.99.0.{10 + i}/24")
        _in(host_ns, masq.setup_ip_masq, backend, NET, cid, "eth0", [ip])
    _in(host_ns, masq.setup_ip_masq, backend, "othernet", "drop1", "eth0", [V4])
    _in(host_ns, masq.gc_ip_masq, NET, [("keep", "eth0")])
    state = "\n".join(_masq_state(host_ns))
    assert "10.99.0.10" in state
    assert "10.99.0.11" not in state
    assert "10.99.0.12" not in state
    assert "10.99.0.2" in state, "another network's rules must survive GC"
    _in(host_ns, masq.gc_ip_masq, NET, [])
    assert "10.99.0.10" not in "\n".join(_masq_state(host_ns))
    _in(host_ns, masq.gc_ip_masq, "othernet", [])
    assert _masq_state(host_ns) == []


def test_gc_nftables_tells_ifnames_apart(host_ns: str) -> None:
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", [V4])
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "net1",
        [ipaddress.ip_interface("10.99.1.2/24")])
    _in(host_ns, masq.gc_ip_masq, NET, [("c1", "net1")])
    assert _sources(_nft_rules(host_ns)) == {"10.99.1.2"}


def test_concurrent_attachments(host_ns: str, backend: str) -> None:
    # Plugins for different containers run at the same time; nobody's rules get lost.
    def attach(i: int) -> None:
        ip = ipaddress.ip_interface(f"10.99.0.{10 + i}/24")
        _in(host_ns, masq.setup_ip_masq, backend, NET, f"c{i}", "eth0", [ip])
        if i % 2:
            _in(host_ns, masq.teardown_ip_masq, backend, NET, f"c{i}", "eth0", None)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(attach, range(12)))
    state = "\n".join(_masq_state(host_ns))
    for i in range(12):
        assert (f"10.99.0.{10 + i}" in state) == (i % 2 == 0), state


def test_failure_is_a_kernel_error_naming_the_chain(host_ns: str) -> None:
    bad = ipaddress.ip_interface("10.99.0.2/24")
    chain = masq.chain_name(NET, "c1")
    # A user chain of the same name referenced from elsewhere cannot be re-declared away.
    ns_run(host_ns, "iptables", "-t", "nat", "-N", chain, check=True)
    ns_run(host_ns, "iptables", "-t", "nat", "-N", "pytref", check=True)
    ns_run(host_ns, "iptables", "-t", "nat", "-A", "pytref", "-j", chain, check=True)
    _in(host_ns, masq.setup_ip_masq, "iptables", NET, "c1", "eth0", [bad])
    with pytest.raises(KernelError) as info:
        _in(host_ns, masq.teardown_ip_masq, "iptables", NET, "c1", "eth0", None)
    assert chain in str(info.value)


# --- traffic ---------------------------------------------------------------------------

def _link(ns: str, a: str, peer_ns: str, b: str) -> None:
    ns_run(ns, "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns",
           Path(peer_ns).name, check=True)


def _addr(ns: str, dev: str, *cidrs: str) -> None:
    for cidr in cidrs:
        extra = ["nodad"] if ":" in cidr else []
        ns_run(ns, "ip", "addr", "add", cidr, "dev", dev, *extra, check=True)
    ns_run(ns, "ip", "link", "set", dev, "up", check=True)


@pytest.fixture
def topology(host_ns: str, netns: str) -> Iterator[tuple[str, str, str]]:
    """container (netns) -- host_ns -- outside: only the host routes between them.

    The outside namespace has no route back to the container subnet, so replies reach the
    container only when the host masquerades; the listener reports the source it sees.
    """
    with temp_netns("o") as outside:
        c_if, h_if, h_out, o_if = (unique_name(k) for k in ("c", "h", "ho", "o"))
        _link(netns, c_if, host_ns, h_if)
        _link(host_ns, h_out, outside, o_if)
        _addr(netns, c_if, "10.99.0.2/24", "fd99::2/64")
        _addr(host_ns, h_if, "10.99.0.1/24", "fd99::1/64")
        _addr(host_ns, h_out, "198.51.100.1/24", "fd51::1/64", "10.99.5.1/24")
        _addr(outside, o_if, "198.51.100.2/24", "fd51::2/64", "10.99.5.2/24")
        ns_run(netns, "ip", "route", "add", "default", "via", "10.99.0.1", check=True)
        ns_run(netns, "ip", "-6", "route", "add", "default", "via", "fd99::1", check=True)
        ns_run(host_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        ns_run(host_ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", check=True)
        yield netns, host_ns, outside


def _seen_source(container: str, outside: str, dst: str) -> str:
    """Send one datagram container -> outside ``dst``; the source address outside saw."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    listener = _in(outside, socket.socket, family, socket.SOCK_DGRAM)
    sender = _in(container, socket.socket, family, socket.SOCK_DGRAM)
    with listener, sender:
        listener.bind((dst, 0))
        listener.settimeout(10)
        # A fresh sender socket is a fresh conntrack flow, so NAT is decided anew.
        sender.sendto(b"pycni", (dst, listener.getsockname()[1]))
        data, addr = listener.recvfrom(64)
    assert data == b"pycni"
    return str(addr[0])


@pytest.mark.parametrize(("dst", "container_ip", "host_ip"), [
    ("198.51.100.2", "10.99.0.2", "198.51.100.1"),
    ("fd51::2", "fd99::2", "fd51::1"),
], ids=["v4", "v6"])
def test_traffic_is_source_natted(topology: tuple[str, str, str], backend: str, dst: str,
                                  container_ip: str, host_ip: str) -> None:
    container, host, outside = topology
    assert _seen_source(container, outside, dst) == container_ip
    _in(host, masq.setup_ip_masq, backend, NET, "c1", "eth0", IPS)
    assert _seen_source(container, outside, dst) == host_ip
    # Ping needs the reply to come back: the outside has no route to the container subnet.
    ping = ns_run(container, "ping", "-c", "1", "-W", "5", dst)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    _in(host, masq.teardown_ip_masq, backend, NET, "c1", "eth0", None)
    assert _seen_source(container, outside, dst) == container_ip


def test_traffic_inside_the_subnet_is_not_natted(topology: tuple[str, str, str],
                                                 backend: str) -> None:
    container, host, outside = topology
    # The container's subnet is a /16 as far as masquerading goes; 10.99.5.0/24 lies in it
    # but is routed through the host, so the packets cross its POSTROUTING hook.
    _in(host, masq.setup_ip_masq, backend, NET, "c1", "eth0",
        [ipaddress.ip_interface("10.99.0.2/16")])
    assert _seen_source(container, outside, "10.99.5.2") == "10.99.0.2"
    assert _seen_source(container, outside, "198.51.100.2") == "198.51.100.1"


# --- differential: the Go bridge plugin -----------------------------------------------

def _go_bridge_add(host: str, container: str, tmp_path: Any, go_plugins: str,
                   cid: str) -> dict[str, Any]:
    conf = {
        "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": unique_name("br"),
        "isGateway": True, "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": "10.99.0.0/24",
                 "dataDir": str(tmp_path / "ipam")},
    }
    env = cni_env("ADD", container_id=cid, netns=container, ifname="eth0", path=go_plugins)
    result: dict[str, Any] = exec_plugin_in(host, f"{go_plugins}/bridge", env, conf).ok()
    return result


@pytest.mark.differential
def test_iptables_rules_match_go_bridge(host_ns: str, netns: str, tmp_path: Any,
                                        go_plugins: str) -> None:
    result = _go_bridge_add(host_ns, netns, tmp_path, go_plugins, "ctr-1")
    ips = [ipaddress.ip_interface(ip["address"]) for ip in result["ips"]]
    theirs = _iptables(host_ns)
    assert theirs, "the Go bridge wrote no masquerade rules"
    with temp_netns("h") as ours_ns:
        _in(ours_ns, masq.setup_ip_masq, "iptables", NET, "ctr-1", "eth0", ips)
        assert _iptables(ours_ns) == theirs


@pytest.mark.differential
def test_teardown_without_ips_removes_go_bridge_rules(host_ns: str, netns: str, tmp_path: Any,
                                                      go_plugins: str) -> None:
    _go_bridge_add(host_ns, netns, tmp_path, go_plugins, "ctr-1")
    _in(host_ns, masq.teardown_ip_masq, "", NET, "ctr-1", "eth0", None)
    assert _iptables(host_ns) == []


@pytest.mark.differential
def test_gc_removes_go_bridge_rules(host_ns: str, netns: str, tmp_path: Any,
                                    go_plugins: str) -> None:
    _go_bridge_add(host_ns, netns, tmp_path, go_plugins, "ctr-1")
    _in(host_ns, masq.gc_ip_masq, NET, [("ctr-1", "eth0")])
    assert _iptables(host_ns) != []
    _in(host_ns, masq.gc_ip_masq, NET, [])
    assert _iptables(host_ns) == []


# --- the nftables runner -----------------------------------------------------------------

def test_nft_library_and_executable_agree(host_ns: str) -> None:
    _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", IPS)
    listing = [{"list": {"chain": {"family": "inet", "table": "cni_plugins_masquerade",
                                   "name": "masq_checks"}}}]
    lib = _in(host_ns, lambda: _nft.nft_json(listing, use_library=True))
    exe = _in(host_ns, lambda: _nft.nft_json(listing, use_library=False))
    assert lib == exe
    assert len([item for item in lib if "rule" in item]) == 2


@pytest.mark.parametrize("use_library", [True, False], ids=["library", "executable"])
def test_nft_errors_name_the_object(host_ns: str, use_library: bool) -> None:
    listing = [{"list": {"table": {"family": "inet", "name": "pyt_missing"}}}]
    with pytest.raises(_nft.NftError) as info:
        _in(host_ns, lambda: _nft.nft_json(listing, what="listing pyt_missing",
                                           use_library=use_library))
    assert info.value.not_found
    assert "listing pyt_missing" in str(info.value)


def test_nftables_conflict_is_a_kernel_error_naming_the_table(host_ns: str) -> None:
    # Someone else's chain of the same name but another type: nftables refuses the batch.
    ns_run(host_ns, "nft", "add table inet cni_plugins_masquerade; add chain inet "
           "cni_plugins_masquerade postrouting { type filter hook forward priority 0; }",
           check=True)
    with pytest.raises(KernelError) as info:
        _in(host_ns, masq.setup_ip_masq, "nftables", NET, "c1", "eth0", IPS)
    assert "cni_plugins_masquerade" in str(info.value)
    assert info.value.code == 100
