"""ClusterConfig validation (each field, errors naming it) and render_conflist (no kernel)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from pycni.cluster import ClusterConfig
from pycni.cluster._cniconf import render_conflist
from pycni.cluster.backends import BACKENDS
from pycni.spec import InvalidNetworkConfig, NetworkConfigList

DATASTORE = {"datastore": "etcd", "nodeName": "n1", "etcdEndpoints": ["http://127.0.0.1:2379"]}
BASE = {**DATASTORE, "backend": {"type": "vxlan"}}
V4 = ipaddress.ip_network("10.244.3.0/24")
V6 = ipaddress.ip_network("fd00:10:244:3::/64")


def _parse(**changes: Any) -> ClusterConfig:
    data = {**BASE, **changes}
    return ClusterConfig.parse({k: v for k, v in data.items() if v is not None},
                               backends=BACKENDS)


@pytest.mark.parametrize(("change", "field"), [
    ({"nodeName": ""}, '"nodeName"'),
    ({"nodeName": 7}, '"nodeName"'),
    ({"backend": 3}, '"backend"'),
    ({"backend": None}, '"backend"'),
    ({"backend": {"type": "bogus"}}, '"backend.type"'),
    ({"backend": "ipip"}, '"backend.type"'),
    ({"clusterCIDR": "10.244.0.1/16"}, '"clusterCIDR"'),
    ({"clusterCIDR": "10.244.0.0/33"}, '"clusterCIDR"'),
    ({"clusterCIDR": []}, '"clusterCIDR"'),
    ({"clusterCIDR": ["10.1.0.0/16", "10.2.0.0/16"]}, '"clusterCIDR"'),
    ({"datastore": "kubernetes", "etcdEndpoints": None}, '"clusterCIDR" is required'),
    ({"underlayInterface": "a/b"}, '"underlayInterface"'),
    ({"underlayInterface": "x" * 16}, '"underlayInterface"'),
    ({"underlayInterface": ""}, '"underlayInterface"'),
    ({"underlayInterface": 5}, '"underlayInterface"'),
    ({"ipMasq": "yes"}, '"ipMasq"'),
    ({"reconcileInterval": 0}, '"reconcileInterval"'),
    ({"reconcileInterval": True}, '"reconcileInterval"'),
    ({"reconcileInterval": 3601}, '"reconcileInterval"'),
    ({"confDir": ""}, '"confDir"'),
    ({"confFile": "a/b.conflist"}, '"confFile"'),
    ({"confFile": "pycni.yaml"}, '"confFile"'),
    ({"networkName": "-bad"}, '"networkName"'),
    ({"networkName": "pycni\n"}, '"networkName"'),
    ({"bridge": "b" * 16}, '"bridge"'),
    ({"ipamDataDir": 5}, '"ipamDataDir"'),
    ({"cniTemplate": "/nonexistent/template.conflist"}, '"cniTemplate"'),
])
def test_each_field_is_checked_and_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidNetworkConfig) as info:
        _parse(**change)
    assert info.value.code == 7
    assert field in info.value.msg
    assert "Traceback" not in info.value.msg


def test_not_an_object() -> None:
    with pytest.raises(InvalidNetworkConfig, match="JSON object, got list"):
        ClusterConfig.parse([], backends=BACKENDS)


def test_defaults_and_datastore_options() -> None:
    config = _parse(backend="host-gw")
    assert (config.backend_type, dict(config.backend_options)) == ("host-gw", {})
    assert config.datastore == DATASTORE  # the rest is the datastore's
    assert config.conf_path == Path("/etc/cni/net.d/10-pycni.conflist")
    assert (config.network_name, config.bridge, config.ip_masq) == ("pycni", "cni0", True)
    assert config.reconcile_interval == 10.0
    assert config.cluster_cidrs == ()
    full = _parse(backend={"type": "vxlan", "vni": 4}, clusterCIDR=["fd00::/48", "10.0.0.0/8"],
                  reconcileInterval=1, confDir="/x", confFile="20-a.conflist")
    assert full.backend_options == {"vni": 4}
    assert [str(c) for c in full.cluster_cidrs] == ["10.0.0.0/8", "fd00::/48"]  # IPv4 first
    assert full.conf_path == Path("/x/20-a.conflist")


def test_subnets_must_lie_in_the_cluster_cidr() -> None:
    config = _parse(clusterCIDR="10.244.0.0/16")
    config.check_subnets((V4, V6))  # no IPv6 cluster CIDR: not checked
    with pytest.raises(InvalidNetworkConfig, match=r'"clusterCIDR".*10\.9\.0\.0/24'):
        config.check_subnets((ipaddress.ip_network("10.9.0.0/24"),))


def test_load_names_the_file_and_overrides_the_node_name(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    with pytest.raises(InvalidNetworkConfig, match="cannot read the cluster config"):
        ClusterConfig.load(str(path), backends=BACKENDS)
    path.write_text("{nope")
    with pytest.raises(InvalidNetworkConfig, match="is not JSON"):
        ClusterConfig.load(str(path), backends=BACKENDS)
    path.write_text(json.dumps(BASE))
    assert ClusterConfig.load(str(path), backends=BACKENDS, node_name="n9").node_name == "n9"


def test_builtin_conflist_dual_stack_with_mtu() -> None:
    config = _parse(ipamDataDir="/var/lib/x", networkName="net1", bridge="br1")
    data = render_conflist(config, (V4, V6), 1450)
    NetworkConfigList.parse(data)
    conf = json.loads(data)
    assert conf["name"] == "net1"
    bridge, portmap = conf["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["mtu"]) == ("bridge", "br1", 1450)
    assert bridge["ipMasq"] is False  # the agent's own table masquerades, once per node
    assert bridge["ipam"]["ranges"] == [[{"subnet": str(V4)}], [{"subnet": str(V6)}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert bridge["ipam"]["dataDir"] == "/var/lib/x"
    assert portmap["type"] == "portmap"
    # rendering is deterministic: the agent rewrites the file only when it changes
    assert render_conflist(config, (V4, V6), 1450) == data
    assert render_conflist(config, (V4,), 1450) != data


def _template(tmp_path: Path, body: str) -> str:
    path = tmp_path / "t.conflist"
    path.write_text(body)
    return str(path)


def test_template_placeholders_are_filled(tmp_path: Path) -> None:
    body = json.dumps({"cniVersion": "1.0.0", "name": "@NODE@-net", "plugins": [
        {"type": "bridge", "mtu": 0, "ipam": {"type": "host-local", "ranges": [
            [{"subnet": "@SUBNET4@"}], [{"subnet": "@SUBNET6@"}]]},
         "args": {"cluster": "@CLUSTER_CIDR@"}}]}).replace('"mtu": 0', '"mtu": @MTU@')
    config = _parse(cniTemplate=_template(tmp_path, body),
                    clusterCIDR=["10.244.0.0/16", "fd00:10:244::/56"])
    conf = json.loads(render_conflist(config, (V4, V6), 1400))
    assert conf["name"] == "n1-net"
    plugin = conf["plugins"][0]
    assert plugin["mtu"] == 1400
    assert plugin["ipam"]["ranges"] == [[{"subnet": str(V4)}], [{"subnet": str(V6)}]]
    assert plugin["args"]["cluster"] == "10.244.0.0/16,fd00:10:244::/56"


def test_template_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidNetworkConfig, match=r'"cniTemplate".*not a JSON conflist'):
        _parse(cniTemplate=_template(tmp_path, "{"))
    with pytest.raises(InvalidNetworkConfig, match=r'"cniTemplate".*"plugins" list'):
        _parse(cniTemplate=_template(tmp_path, '{"name": "x"}'))
    # a placeholder the node has no value for: no IPv6 subnet here
    body = json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "@SUBNET6@"}]]}}]})
    config = _parse(cniTemplate=_template(tmp_path, body))
    with pytest.raises(InvalidNetworkConfig, match=r'"cniTemplate".*@SUBNET6@'):
        render_conflist(config, (V4,), 1500)
    # a filled-in template that is no valid conflist
    config = _parse(cniTemplate=_template(tmp_path, '{"name": "x", "plugins": [{}]}'))
    with pytest.raises(InvalidNetworkConfig, match="not valid"):
        render_conflist(config, (V4,), 1500)
