"""portmap rule shape and config handling, with a made-up prevResult (no pod needed).

The iptables backend is compared with the Go reference plugin (``/usr/lib/cni/portmap``
1.1.1, iptables only): the same config in two fresh host namespaces must leave the same
``iptables-save``/``ip6tables-save`` nat tables, and each implementation's DEL must remove
the other's rules.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pycni.spec import SUPPORTED_VERSIONS
from pycni.testing import GO_PLUGIN_DIR, call_plugin, cni_env, exec_plugin_in, ns_run, temp_netns

pytestmark = pytest.mark.netns

SANDBOX = "/run/netns/pyt-sandbox"
PREV = {"cniVersion": "1.0.0",
        "interfaces": [{"name": "pytbr0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": SANDBOX}],
        "ips": [{"address": "10.88.0.1/24", "interface": 0},
                {"address": "10.88.0.5/24", "interface": 2, "gateway": "10.88.0.1"},
                {"address": "fd00::5/64", "interface": 2}]}
BASIC = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
         {"hostPort": 8081, "containerPort": 81, "protocol": "udp", "hostIP": "192.0.2.1"},
         {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "fd00:1::1"}]


def conf(mappings: list[dict[str, Any]], *, version: str = "1.0.0", prev: bool = True,
         **extra: Any) -> dict[str, Any]:
    """A portmap config for network "pytnet"."""
    out: dict[str, Any] = {"cniVersion": version, "name": "pytnet", "type": "portmap",
                           "runtimeConfig": {"portMappings": mappings}, **extra}
    if prev:
        out["prevResult"] = PREV
    return out


def ours(host: str, command: str, config: dict[str, Any], cid: str = "cid1") -> Any:
    """Our plugin's call (status, parsed output)."""
    call = call_plugin(host, "portmap", cni_env(command, container_id=cid, netns=SANDBOX), config)
    return call.status, call.json


_COUNTERS = re.compile(r"\[\d+:\d+\]")


def nat(host: str) -> list[str]:
    """Both families' nat tables, without counters and comments lines."""
    lines = []
    for tool in ("iptables-save", "ip6tables-save"):
        out = ns_run(host, tool, "-t", "nat", check=True).stdout
        lines += [f"{tool}: {_COUNTERS.sub('', line)}" for line in out.splitlines()
                  if line and not line.startswith("#")]
    return lines


def nft_ruleset(host: str) -> Any:
    return json.loads(ns_run(host, "nft", "-j", "list", "ruleset", check=True).stdout)["nftables"]


DIFFERENTIAL_CASES = {
    "basic": (BASIC, {}),
    "no-snat": (BASIC, {"snat": False}),
    "mark-bit": (BASIC, {"markMasqBit": 5}),
    "external-mark-chain": (BASIC, {"externalSetMarkChain": "PYT-MARK-MASQ"}),
    "conditions": (BASIC, {"conditionsV4": ["!", "-s", "192.0.2.0/24"],
                           "conditionsV6": ["!", "-s", "fc00::/7"]}),
    "many-ports-and-sctp": ([{"hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp"}
                             for i in range(17)]
                            + [{"hostPort": 7000, "containerPort": 70, "protocol": "sctp"}], {}),
}


@pytest.mark.differential
@pytest.mark.parametrize("case", sorted(DIFFERENTIAL_CASES))
def test_iptables_rules_match_reference(case: str, go_plugins: str) -> None:
    mappings, extra = DIFFERENTIAL_CASES[case]
    config = conf(mappings, **extra)
    with temp_netns("h") as go_host, temp_netns("h") as our_host:
        if "externalSetMarkChain" in extra:
            for host in (go_host, our_host):
                for tool in ("iptables", "ip6tables"):
                    ns_run(host, tool, "-t", "nat", "-N", "PYT-MARK-MASQ", check=True)
        env = cni_env("ADD", container_id="cid1", netns=SANDBOX)
        theirs = exec_plugin_in(go_host, f"{go_plugins}/portmap", env, config).ok()
        status, mine = ours(our_host, "ADD", {**config, "backend": "iptables"})
        assert status == 0
        assert mine == theirs
        assert nat(our_host) == nat(go_host)
        # Go 1.1.1's CHECK looks for the IPv4 rules in ip6tables too and fails on any
        # dual-stack result, so only ours is checked.
        assert ours(our_host, "CHECK", {**config, "backend": "iptables"})[0] == 0


@pytest.mark.differential
def test_each_del_removes_the_others_iptables_rules(go_plugins: str) -> None:
    """Same chain names and comments: switching implementations leaks nothing."""
    config = conf(BASIC)
    env = cni_env("ADD", container_id="cid1", netns=SANDBOX)
    with temp_netns("h") as empty, temp_netns("h") as a, temp_netns("h") as b:
        # The shared chains stay (as with the reference plugin); compare with an ADD+DEL.
        assert ours(empty, "ADD", {**config, "backend": "iptables"})[0] == 0
        assert ours(empty, "DEL", {**conf(BASIC, prev=False), "backend": "iptables"})[0] == 0
        baseline = nat(empty)
        assert not any("CNI-DN-" in line for line in baseline)

        exec_plugin_in(a, f"{go_plugins}/portmap", env, config).ok()
        assert ours(a, "DEL", {**conf(BASIC, prev=False), "backend": "iptables"})[0] == 0
        assert nat(a) == baseline

        assert ours(b, "ADD", {**config, "backend": "iptables"})[0] == 0
        exec_plugin_in(b, f"{go_plugins}/portmap", {**env, "CNI_COMMAND": "DEL"},
                       conf(BASIC, prev=False)).ok()
        assert nat(b) == baseline


@pytest.mark.differential
def test_default_backend_del_removes_the_references_iptables_rules(go_plugins: str) -> None:
    """The same conflist (no backend) before and after a node switches to pycni."""
    env = cni_env("ADD", container_id="cid1", netns=SANDBOX)
    with temp_netns("h") as host:
        exec_plugin_in(host, f"{go_plugins}/portmap", env, conf(BASIC)).ok()
        assert any("CNI-DN-" in line for line in nat(host))
        assert ours(host, "DEL", conf(BASIC, prev=False))[0] == 0
        assert not any("CNI-DN-" in line for line in nat(host))


def test_default_backend_writes_the_references_iptables_layout(host_ns: str) -> None:
    """Without "backend" (and with the iptables tools here) ADD writes what the reference's
    portmap writes: CNI-HOSTPORT-DNAT jumping to a CNI-DN-<hash> chain; no nftables table."""
    assert ours(host_ns, "ADD", conf(BASIC))[0] == 0
    rules = nat(host_ns)
    for tool in ("iptables-save", "ip6tables-save"):
        assert f"{tool}: :CNI-HOSTPORT-DNAT - " in rules
        assert f"{tool}: -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT" \
            in rules
        assert any(line.startswith(f"{tool}: -A CNI-HOSTPORT-DNAT ") and "-j CNI-DN-" in line
                   for line in rules)
    assert any("--dport 8080 -j DNAT --to-destination 10.88.0.5:80" in line for line in rules)
    assert not [item for item in nft_ruleset(host_ns)
                if item.get("table", {}).get("name") == "cni_hostport"]
    assert ours(host_ns, "CHECK", conf(BASIC))[0] == 0
    assert ours(host_ns, "DEL", conf(BASIC, prev=False))[0] == 0
    assert not any("CNI-DN-" in line for line in nat(host_ns))


def test_default_backend_del_removes_nftables_rules_of_older_pycni(host_ns: str) -> None:
    """pycni used to default to nftables: DEL without "backend" still finds those rules."""
    assert ours(host_ns, "ADD", {**conf(BASIC), "backend": "nftables"})[0] == 0
    assert ours(host_ns, "DEL", conf(BASIC, prev=False))[0] == 0
    left = [item["rule"] for item in nft_ruleset(host_ns) if "rule" in item]
    assert all(r["chain"] in ("prerouting", "output") for r in left)


def test_nftables_layout(host_ns: str) -> None:
    """The nftables backend writes the cni_hostport tables; DEL empties their rule chains."""
    assert ours(host_ns, "ADD", {**conf(BASIC), "backend": "nftables"})[0] == 0
    rules = [item["rule"] for item in nft_ruleset(host_ns) if "rule" in item]
    by_chain: dict[tuple[str, str], int] = {}
    for rule in rules:
        assert rule["table"] == "cni_hostport"
        key = (rule["family"], rule["chain"])
        by_chain[key] = by_chain.get(key, 0) + 1
    assert by_chain == {
        ("ip", "hostports"): 1, ("ip", "hostip_hostports"): 1, ("ip", "masquerading"): 1,
        ("ip", "prerouting"): 2, ("ip", "output"): 2,
        ("ip6", "hostports"): 1, ("ip6", "hostip_hostports"): 1, ("ip6", "masquerading"): 1,
        ("ip6", "prerouting"): 2, ("ip6", "output"): 2,
    }
    owned = {r.get("comment") for r in rules if r["chain"] not in ("prerouting", "output")}
    assert owned == {"pytnet/eth0/cid1"}
    assert ours(host_ns, "DEL", {**conf(BASIC, prev=False), "backend": "nftables"})[0] == 0
    left = [item["rule"] for item in nft_ruleset(host_ns) if "rule" in item]
    assert all(r["chain"] in ("prerouting", "output") for r in left)


def test_nftables_conditions_go_on_each_dnat_rule(host_ns: str) -> None:
    config = conf(BASIC[:1], conditionsV4=["ip", "saddr", "!=", "192.0.2.0/24"])
    assert ours(host_ns, "ADD", config)[0] == 0
    text = ns_run(host_ns, "nft", "list", "chain", "ip", "cni_hostport", "hostports").stdout
    assert "ip saddr != 192.0.2.0/24 tcp dport 8080 dnat to 10.88.0.5:80" in text
    assert ours(host_ns, "CHECK", config)[0] == 0


@pytest.mark.parametrize("version", [v for v in SUPPORTED_VERSIONS if v >= "0.3.0"])
def test_no_mappings_passes_through_and_touches_nothing(host_ns: str, version: str) -> None:
    for mappings in ([], None):
        config = conf([], version=version)
        if mappings is None:
            del config["runtimeConfig"]
        status, out = ours(host_ns, "ADD", config)
        assert status == 0
        assert out["ips"][1]["address"] == "10.88.0.5/24"
        assert out["cniVersion"] == version
        if version >= "0.4.0":  # CHECK exists since 0.4.0
            assert ours(host_ns, "CHECK", config)[0] == 0
        assert ours(host_ns, "DEL", {**config, "prevResult": None})[0] == 0
    assert nft_ruleset(host_ns) == [item for item in nft_ruleset(host_ns) if "metainfo" in item]


def test_container_keys_in_any_case_and_default_protocol(host_ns: str) -> None:
    """containerd's HostPort/ContainerPort/Protocol: "TCP"; a missing protocol is tcp."""
    mappings = [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "TCP", "HostIP": ""},
                {"hostport": 8081, "containerport": 81}]
    assert ours(host_ns, "ADD", conf(mappings, backend="nftables"))[0] == 0
    text = ns_run(host_ns, "nft", "list", "chain", "ip", "cni_hostport", "hostports").stdout
    assert "tcp dport 8080 dnat to 10.88.0.5:80" in text
    assert "tcp dport 8081 dnat to 10.88.0.5:81" in text


def test_backend_is_inferred_from_iptables_only_options(host_ns: str) -> None:
    assert ours(host_ns, "ADD", conf(BASIC[:1], markMasqBit=14))[0] == 0
    assert any("0x4000/0x4000" in line for line in nat(host_ns))
    assert not [item for item in nft_ruleset(host_ns)
                if item.get("table", {}).get("name") == "cni_hostport"]


def test_only_the_sandbox_interface_addresses_are_mapped(host_ns: str) -> None:
    """The bridge's own 10.88.0.1 (interface 0, no sandbox) is skipped, as upstream does."""
    assert ours(host_ns, "ADD", conf(BASIC[:1], backend="nftables"))[0] == 0
    text = ns_run(host_ns, "nft", "list", "table", "ip", "cni_hostport").stdout
    assert "10.88.0.5:80" in text
    assert "10.88.0.1" not in text


@pytest.mark.parametrize(("extra", "mappings", "needle"), [
    ({"backend": "ebpf"}, BASIC, "backend"),
    ({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}, BASIC,
     "externalSetMarkChain"),
    ({"backend": "nftables", "markMasqBit": 3}, BASIC, "markMasqBit"),
    ({"backend": "nftables", "conditionsV4": ["-d", "192.0.2.1"]}, BASIC, "conditionsV4"),
    ({"backend": "iptables", "conditionsV6": ["ip6", "saddr", "fd00::1"]}, BASIC,
     "conditionsV6"),
    ({"markMasqBit": 3, "conditionsV4": ["ip", "daddr", "192.0.2.1"]}, BASIC, "backend"),
    ({"markMasqBit": 32}, BASIC, "markMasqBit"),
    ({"markMasqBit": 3, "externalSetMarkChain": "X"}, BASIC, "externalSetMarkChain"),
    ({"snat": "maybe"}, BASIC, "snat"),
    ({}, [{"hostPort": 0, "containerPort": 80}], "hostPort"),
    ({}, [{"hostPort": 80, "containerPort": 65536}], "containerPort"),
    ({}, [{"hostPort": 80, "containerPort": "80"}], "containerPort"),
    ({}, [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}], "protocol"),
    ({}, [{"hostPort": 80, "containerPort": 80, "hostIP": "nope"}], "hostIP"),
])
def test_bad_config_is_error_7(host_ns: str, extra: dict[str, Any],
                               mappings: list[dict[str, Any]], needle: str) -> None:
    for command in ("ADD", "DEL", "CHECK"):
        status, out = ours(host_ns, command, conf(mappings, **extra))
        assert status == 1
        assert out["code"] == 7
        assert needle in out["msg"]
    assert nft_ruleset(host_ns) == [item for item in nft_ruleset(host_ns) if "metainfo" in item]


def test_add_without_prev_result_is_an_error(host_ns: str) -> None:
    status, out = ours(host_ns, "ADD", conf(BASIC, prev=False))
    assert status == 1
    assert out["code"] == 7
    assert "prevResult" in out["msg"]


def test_gc_needs_nothing_but_the_network(host_ns: str) -> None:
    """GC succeeds on an empty namespace, then collects only the attachment not listed."""
    gone = [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]
    for backend in ("nftables", "iptables"):
        gc = {"cniVersion": "1.1.0", "name": "pytnet", "type": "portmap", "backend": backend,
              "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
        env = {"CNI_COMMAND": "GC", "CNI_PATH": GO_PLUGIN_DIR}
        call = call_plugin(host_ns, "portmap", env, gc)
        assert call.status == 0, call.stdout
        assert ours(host_ns, "ADD", conf(BASIC, backend=backend), cid="keep")[0] == 0
        assert ours(host_ns, "ADD", conf(gone, backend=backend), cid="gone")[0] == 0
        rules = "\n".join(nat(host_ns)) + ns_run(host_ns, "nft", "list", "ruleset").stdout
        assert "9090" in rules
        call = call_plugin(host_ns, "portmap", env, gc)
        assert call.status == 0, call.stdout
        rules = "\n".join(nat(host_ns)) + ns_run(host_ns, "nft", "list", "ruleset").stdout
        assert "8080" in rules
        assert "9090" not in rules
        assert ours(host_ns, "DEL", conf(BASIC, backend=backend), cid="keep")[0] == 0


def _firewall(host: str) -> tuple[Any, list[str]]:
    """Everything a batch could have changed: the nftables ruleset and both nat tables."""
    return ([i for i in nft_ruleset(host) if "metainfo" not in i], nat(host))


INJECTIONS = {
    "nftables": [
        ["ip", "saddr", "192.0.2.1\nflush ruleset"],
        ["ip saddr 192.0.2.1; flush ruleset"],
        ["ip", "saddr", "192.0.2.0/24", ";", "flush", "ruleset"],
        ["ip", "saddr", "192.0.2.0/24", "accept"],
        ["meta", "mark", "set", "1"],
        ["iifname", "eth0\"; flush ruleset; \""],
        ["ip", "daddr", "fd00::1"],
    ],
    "iptables": [
        ["-s", "192.0.2.0/24\nCOMMIT\n*nat\n-F"],
        ["-s", "192.0.2.0/24", "-j", "ACCEPT"],
        ["-m", "comment", "--comment", "x", "--ju", "ACCEPT"],
        ["-t", "filter", "-s", "192.0.2.1"],
        ["-A", "PREROUTING"],
        ["-s", "192.0.2.0/24 -j ACCEPT"],
        ["--dst-type", "LOCAL"],
        ["-d", "fd00::1"],
        ["-i", "eth0;x"],
    ],
}


@pytest.mark.parametrize(("backend", "conditions"),
                         [(b, c) for b, cases in INJECTIONS.items() for c in cases])
def test_conditions_are_parsed_never_pasted(host_ns: str, backend: str,
                                            conditions: list[str]) -> None:
    good = {"backend": backend}
    assert ours(host_ns, "ADD", conf(BASIC, **good), cid="cid0")[0] == 0
    before = _firewall(host_ns)
    status, out = ours(host_ns, "ADD", conf(BASIC, **good, conditionsV4=conditions))
    assert status == 1
    assert out["code"] == 7
    assert "conditionsV4" in out["msg"]
    assert _firewall(host_ns) == before


def test_iptables_conditions_show_in_the_rules(host_ns: str) -> None:
    config = conf(BASIC[:1], backend="iptables",
                  conditionsV4=["!", "-s", "192.0.2.0/24", "-m", "addrtype", "!",
                                "--src-type", "LOCAL", "-i", "pyt+"])
    assert ours(host_ns, "ADD", config)[0] == 0
    dnat = [line for line in nat(host_ns)
            if line.startswith("iptables-save: -A CNI-HOSTPORT-DNAT")]
    assert len(dnat) == 1
    assert "! -s 192.0.2.0/24" in dnat[0]
    assert "-m addrtype ! --src-type LOCAL" in dnat[0]
    assert "-i pyt+" in dnat[0]
    assert ours(host_ns, "CHECK", config)[0] == 0


def test_nftables_interface_conditions(host_ns: str) -> None:
    config = conf(BASIC[:1], conditionsV4=["iifname", "!=", "pyt0", "ip saddr 192.0.2.0/24"])
    assert ours(host_ns, "ADD", config)[0] == 0
    text = ns_run(host_ns, "nft", "list", "chain", "ip", "cni_hostport", "hostports").stdout
    assert 'iifname != "pyt0" ip saddr 192.0.2.0/24 tcp dport 8080 dnat to 10.88.0.5:80' in text
    assert ours(host_ns, "CHECK", config)[0] == 0
