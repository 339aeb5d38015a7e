"""pycni's runtime driving the Go reference plugins (bridge + host-local + portmap).

The runtime's calls run on a thread inside the test "host" namespace, so the plugins it
execs are born there: the bridge, veth host ends and iptables rules stay in the sandbox.
The Go plugins stop at spec 1.0.0, so that is the lists' version.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from pycni.host import run_in_netns
from pycni.runtime import CNIConfig, PodNetworks, RuntimeConf
from pycni.spec import GCAttachment, NetworkConfigList, Result
from pycni.testing import ip_json, ns_run, unique_name

pytestmark = [pytest.mark.netns, pytest.mark.differential]

PORTS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]


def _conflist(bridge: str, data_dir: Path, **over: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "pytnet",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "dataDir": str(data_dir),
                      "ranges": [[{"subnet": "10.123.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
    conf.update(over)
    return conf


@pytest.fixture
def setup(tmp_path: Path, go_plugins: str) -> tuple[CNIConfig, NetworkConfigList, Path]:
    data_dir = tmp_path / "ipam"
    raw = json.dumps(_conflist(unique_name("br"), data_dir), indent=2).encode()
    cni = CNIConfig([go_plugins], str(tmp_path / "cache"))
    return cni, NetworkConfigList.parse(raw), data_dir


def _has_eth0(netns: str) -> bool:
    return ns_run(netns, "ip", "link", "show", "eth0").returncode == 0


def _eth0_addrs(netns: str) -> list[str]:
    link = ip_json(netns, "addr", "show", "eth0")[0]
    return [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"]


def _reserved(data_dir: Path) -> list[str]:
    net_dir = data_dir / "pytnet"
    return sorted(p.name for p in net_dir.iterdir() if p.name[0].isdigit()) \
        if net_dir.exists() else []


def test_add_check_del(host_ns: str, netns: str,
                       setup: tuple[CNIConfig, NetworkConfigList, Path]) -> None:
    cni, net, data_dir = setup
    rt = RuntimeConf("c1", netns, "eth0", [("IgnoreUnknown", "1")], {"portMappings": PORTS})
    result = run_in_netns(host_ns, cni.add_network_list, net, rt)
    assert result.cni_version == "1.0.0"
    assert [str(ip.address) for ip in result.ips] == ["10.123.0.2/24"]
    assert _eth0_addrs(netns) == ["10.123.0.2/24"]
    assert _reserved(data_dir) == ["10.123.0.2"]
    nat = ns_run(host_ns, "iptables-save", "-t", "nat").stdout
    assert "--dport 18080" in nat
    assert "10.123.0.2:80" in nat

    # Go portmap 1.1.1's CHECK compares the IPv4 rules against the IPv6 table and always
    # fails when it has port mappings, so CHECK runs without capability args: bridge and
    # host-local still check the cached prevResult against the kernel.
    run_in_netns(host_ns, cni.check_network_list, net, RuntimeConf("c1", netns, "eth0"))

    run_in_netns(host_ns, cni.delete_network_list, net, rt)
    assert not _has_eth0(netns)
    assert _reserved(data_dir) == []
    assert "--dport 18080" not in ns_run(host_ns, "iptables-save", "-t", "nat").stdout
    assert cni.cache.read("pytnet", "c1", "eth0") is None
    # DEL is idempotent.
    run_in_netns(host_ns, cni.delete_network_list, net, rt)


def test_check_fails_when_the_interface_is_gone(
        host_ns: str, netns: str, setup: tuple[CNIConfig, NetworkConfigList, Path]) -> None:
    cni, net, _ = setup
    rt = RuntimeConf("c1", netns, "eth0")
    run_in_netns(host_ns, cni.add_network_list, net, rt)
    ns_run(netns, "ip", "link", "del", "eth0", check=True)
    with pytest.raises(Exception, match="bridge") as err:
        run_in_netns(host_ns, cni.check_network_list, net, rt)
    assert getattr(err.value, "code", None) is not None
    run_in_netns(host_ns, cni.delete_network_list, net, rt)


def test_cache_file_is_libcni_format(host_ns: str, netns: str,
                                     setup: tuple[CNIConfig, NetworkConfigList, Path]) -> None:
    cni, net, _ = setup
    rt = RuntimeConf("c1", netns, "eth0", [("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")],
                     {"portMappings": PORTS})
    result = run_in_netns(host_ns, cni.add_network_list, net, rt)
    path = Path(cni.cache.cache_dir, "results", "pytnet-c1-eth0")
    text = path.read_text()
    obj = json.loads(text)
    # libcni's cachedInfo: these names, in this order, compact JSON.
    assert list(obj) == ["kind", "containerId", "config", "ifName", "networkName", "netns",
                         "cniArgs", "capabilityArgs", "result"]
    assert obj["kind"] == "cniCacheV1"
    assert obj["containerId"] == "c1"
    assert obj["ifName"] == "eth0"
    assert obj["networkName"] == "pytnet"
    assert obj["netns"] == netns
    # []byte marshals as standard base64 of the conflist's exact bytes.
    assert base64.b64decode(obj["config"], validate=True) == net.source
    assert obj["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]]
    assert obj["capabilityArgs"] == {"portMappings": [
        {"containerPort": 80, "hostPort": 18080, "protocol": "tcp"}]}
    assert Result.from_json(obj["result"]).to_json() == result.to_json()
    assert ", " not in text
    assert ": " not in text
    run_in_netns(host_ns, cni.delete_network_list, net, rt)


def test_gc_deletes_stale_attachments_with_go_plugins(
        host_ns: str, netns: str, netns2: str,
        setup: tuple[CNIConfig, NetworkConfigList, Path]) -> None:
    cni, net, data_dir = setup
    run_in_netns(host_ns, cni.add_network_list, net, RuntimeConf("c1", netns, "eth0"))
    run_in_netns(host_ns, cni.add_network_list, net, RuntimeConf("c2", netns2, "eth0"))
    assert _reserved(data_dir) == ["10.123.0.2", "10.123.0.3"]
    # STATUS is a no-op below 1.1.0 (libcni's rule), so it succeeds.
    run_in_netns(host_ns, cni.status_network_list, net)

    run_in_netns(host_ns, cni.gc_network_list, net, [GCAttachment("c1", "eth0")])
    assert _reserved(data_dir) == ["10.123.0.2"]
    assert [e.container_id for e in cni.cached_attachments()] == ["c1"]
    assert not _has_eth0(netns2)
    assert _eth0_addrs(netns) == ["10.123.0.2/24"]

    run_in_netns(host_ns, cni.gc_network_list, net, [])
    assert _reserved(data_dir) == []
    assert cni.cached_attachments() == []


def test_versions_negotiate_down_to_what_go_plugins_speak(
        host_ns: str, netns: str, tmp_path: Path, go_plugins: str) -> None:
    raw = _conflist(unique_name("br"), tmp_path / "ipam", cniVersion="0.4.0",
                    cniVersions=["0.4.0", "1.0.0", "1.1.0"])
    net = NetworkConfigList.parse(raw)
    assert net.cni_version == "1.1.0"
    cni = CNIConfig([go_plugins], str(tmp_path / "cache"))
    assert cni.validate_network_list(net.with_version("1.0.0")) == ["portMappings"]
    with pytest.raises(Exception, match="does not support config version"):
        cni.validate_network_list(net)
    chosen = cni.negotiate(net)
    assert chosen.cni_version == "1.0.0"
    rt = RuntimeConf("c1", netns, "eth0")
    result = run_in_netns(host_ns, cni.add_network_list, chosen, rt)
    assert result.cni_version == "1.0.0"
    run_in_netns(host_ns, cni.delete_network_list, chosen, rt)


def test_pod_setup_status_teardown(host_ns: str, netns: str, tmp_path: Path,
                                   go_plugins: str) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-pyt.conflist").write_text(
        json.dumps(_conflist(unique_name("br"), tmp_path / "ipam")))
    (conf_dir / "20-other.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "loopback"}]}))
    pods = PodNetworks(conf_dir=str(conf_dir), path=[go_plugins],
                       cache_dir=str(tmp_path / "cache"))
    setup = run_in_netns(host_ns, pods.setup, "pod1", netns, pod_name="web")
    assert setup.network == "pytnet"
    assert setup.ips == ["10.123.0.2/24"]
    status = pods.status("pod1", netns)
    lo = status.link("lo")
    assert lo is not None
    assert lo.up
    assert "127.0.0.1/8" in lo.addresses
    assert status.ips == ["10.123.0.2/24"]
    run_in_netns(host_ns, pods.check, "pod1", netns)

    # The config file disappears: teardown still releases the lease from the cached config.
    (conf_dir / "10-pyt.conflist").unlink()
    run_in_netns(host_ns, pods.teardown, "pod1", netns)
    assert _reserved(tmp_path / "ipam") == []
    lo_after = pods.status("pod1", netns).link("lo")
    assert lo_after is not None
    assert not lo_after.up
    # Idempotent, also once the namespace is gone.
    run_in_netns(host_ns, pods.teardown, "pod1", netns)
    run_in_netns(host_ns, pods.teardown, "pod1", "/run/netns/pyt-gone")


def test_failed_pod_setup_is_undone(host_ns: str, netns: str, tmp_path: Path,
                                    go_plugins: str) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    broken = _conflist(unique_name("br"), tmp_path / "ipam")
    broken["plugins"].append({"type": "pyt-no-such-plugin"})
    (conf_dir / "10-pyt.conflist").write_text(json.dumps(broken))
    pods = PodNetworks(conf_dir=str(conf_dir), path=[go_plugins],
                       cache_dir=str(tmp_path / "cache"))
    with pytest.raises(Exception, match="pyt-no-such-plugin"):
        run_in_netns(host_ns, pods.setup, "pod1", netns)
    assert _reserved(tmp_path / "ipam") == []
    assert pods.cni.cached_attachments() == []
