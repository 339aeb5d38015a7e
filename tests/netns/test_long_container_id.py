"""A 100 KB container ID through pycni's own chain: bridge (ipMasq) + host-local + portmap
(iptables) + firewall, driven by pycni's runtime (in-process plugins) in a test host netns.

The spec sets no limit on CNI_CONTAINERID and the reference plugins accept 100 KB; every file
and rule keyed by it must work and be gone after DEL (or GC).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycni.host import run_in_netns
from pycni.host.netfilter.masq import chain_name
from pycni.host.netfilter.portmap.iptables import dnat_chain
from pycni.runtime import CNIConfig, RuntimeConf
from pycni.spec import GCAttachment, NetworkConfigList
from pycni.store import fit_name
from pycni.testing import ns_run, unique_name

pytestmark = pytest.mark.netns

LONG_ID = "c" + "0123456789abcdef" * 6400
#: Differs from LONG_ID only in its last byte: far past any cut-off prefix.
LONG_ID2 = LONG_ID[:-1] + "x"
NET = "pytlong"
PORTS = [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]


def _network(tmp_path: Path, fw_backend: str) -> NetworkConfigList:
    conf = {
        "cniVersion": "1.1.0", "name": NET,
        "plugins": [
            {"type": "bridge", "bridge": unique_name("br"), "isGateway": True, "ipMasq": True,
             "ipMasqBackend": "iptables",
             "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                      "ranges": [[{"subnet": "10.124.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "backend": "iptables", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": fw_backend, "dataDir": str(tmp_path / "fw")},
        ],
    }
    return NetworkConfigList.parse(json.dumps(conf).encode())


def _rt(cid: str, netns: str) -> RuntimeConf:
    return RuntimeConf(cid, netns, "eth0", [], {"portMappings": PORTS})


def _files(tmp_path: Path) -> tuple[list[str], list[str]]:
    """(firewall records, result cache entries)."""
    return (sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "fw").rglob("*")),
            sorted(p.name for p in (tmp_path / "cache" / "results").glob("*")))


def _nat(host_ns: str) -> str:
    return ns_run(host_ns, "iptables-save", "-t", "nat", check=True).stdout


def _state(host_ns: str, tmp_path: Path, ip: str) -> dict[str, object]:
    """What one attachment leaves: its lease, and nat, filter and nft rules naming its IP."""
    nat = _nat(host_ns)
    filt = ns_run(host_ns, "iptables-save", "-t", "filter", check=True).stdout
    nft = ns_run(host_ns, "nft", "list", "ruleset", check=True).stdout
    return {
        "lease": (tmp_path / "ipam" / NET / ip).exists(),
        "nat": [line for line in nat.splitlines() if ip in line],
        "filter": [line for line in filt.splitlines() if ip in line],
        "nft": [line for line in nft.splitlines() if ip in line],
    }


@pytest.mark.parametrize("fw_backend", ["iptables", "nftables"])
def test_add_check_gc_del_with_100_kb_container_ids(host_ns: str, netns: str, netns2: str,
                                                    tmp_path: Path, fw_backend: str) -> None:
    cni = CNIConfig([str(tmp_path / "no-plugins")], str(tmp_path / "cache"))
    net = _network(tmp_path, fw_backend)
    one, two = _rt(LONG_ID, netns), _rt(LONG_ID2, netns2)
    ip1 = str(run_in_netns(host_ns, cni.add_network_list, net, one).ips[0].address.ip)
    ip2 = str(run_in_netns(host_ns, cni.add_network_list, net, two).ips[0].address.ip)
    assert ip1 != ip2
    run_in_netns(host_ns, cni.check_network_list, net, one)
    run_in_netns(host_ns, cni.check_network_list, net, two)
    nat = _nat(host_ns)
    for cid in (LONG_ID, LONG_ID2):
        assert f":{chain_name(NET, cid)} " in nat
        assert f":{dnat_chain(NET, cid)} " in nat
    assert max(len(line) for line in nat.splitlines()) < 1024  # comments were cut
    kept = _state(host_ns, tmp_path, ip1)
    assert kept["lease"]
    assert kept["filter"] or kept["nft"]

    # GC with the second attachment's cache entry lost: its plugins must collect it.
    cni.cache.delete(NET, LONG_ID2, "eth0")
    run_in_netns(host_ns, cni.gc_network_list, net, [GCAttachment(LONG_ID, "eth0")])
    nat = _nat(host_ns)
    assert chain_name(NET, LONG_ID2) not in nat
    assert dnat_chain(NET, LONG_ID2) not in nat
    gone = _state(host_ns, tmp_path, ip2)
    assert (gone["lease"], gone["nat"], gone["filter"], gone["nft"]) == (False, [], [], [])
    assert _state(host_ns, tmp_path, ip1) == kept
    assert _files(tmp_path) == (
        [f"fw/{NET}", f"fw/{NET}/{fit_name(f'{LONG_ID}_eth0', '.json')}"],
        [fit_name(f"{NET}-{LONG_ID}-eth0")])
    run_in_netns(host_ns, cni.check_network_list, net, one)

    run_in_netns(host_ns, cni.delete_network_list, net, one)
    run_in_netns(host_ns, cni.delete_network_list, net, one)  # DEL is idempotent
    nat = _nat(host_ns)
    assert chain_name(NET, LONG_ID) not in nat
    assert dnat_chain(NET, LONG_ID) not in nat
    assert _state(host_ns, tmp_path, ip1) == {"lease": False, "nat": [], "filter": [],
                                               "nft": []}
    assert _files(tmp_path) == ([], [])
    assert sorted(p.name for p in (tmp_path / "ipam" / NET).iterdir()) == [
        "last_reserved_ip.0", "lock"]
