"""Agent-config validation of the cluster datastores (no server needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import pycni.cluster
from pycni.cluster import DATASTORES, EtcdDatastore, KubernetesDatastore, load_datastore
from pycni.cluster.etcd import NetworkConfig
from pycni.spec import InvalidNetworkConfig


def _error(config: dict[str, Any]) -> InvalidNetworkConfig:
    with pytest.raises(InvalidNetworkConfig) as info:
        load_datastore(config)
    assert info.value.code == 7
    return info.value


def test_registry_and_public_names() -> None:
    assert {"etcd": EtcdDatastore, "kubernetes": KubernetesDatastore} == DATASTORES
    for name in pycni.cluster.__all__:
        assert hasattr(pycni.cluster, name)


def test_unknown_datastore_names_the_field() -> None:
    err = _error({"datastore": "consul", "nodeName": "n"})
    assert '"datastore"' in err.msg
    assert "'consul'" in err.msg
    assert '"etcd", "kubernetes"' in err.msg


def test_option_of_the_other_datastore_is_an_error() -> None:
    err = _error({"datastore": "kubernetes", "nodeName": "n",
                  "etcdEndpoints": ["http://127.0.0.1:2379"]})
    assert '"etcdEndpoints" is an option of the etcd datastore' in err.msg
    err = _error({"datastore": "etcd", "nodeName": "n", "kubeconfig": "/k",
                  "etcdEndpoints": ["http://127.0.0.1:2379"]})
    assert '"kubeconfig" is an option of the kubernetes datastore' in err.msg


def test_unknown_option_and_bad_values() -> None:
    assert "'bogus'" in _error({"datastore": "etcd", "nodeName": "n", "bogus": 1}).msg
    assert '"nodeName"' in _error({"datastore": "etcd"}).msg
    assert '"etcdEndpoints"' in _error({"datastore": "etcd", "nodeName": "n"}).msg
    assert '"etcdEndpoints"' in _error({"datastore": "etcd", "nodeName": "n",
                                        "etcdEndpoints": ["127.0.0.1:2379"]}).msg
    assert '"leaseTTL"' in _error({"datastore": "etcd", "nodeName": "n", "leaseTTL": 0,
                                   "etcdEndpoints": ["http://127.0.0.1:2379"]}).msg


def test_valid_configs_build_their_datastore() -> None:
    etcd = load_datastore({"datastore": "etcd", "nodeName": "n", "leaseTTL": 10,
                           "etcdEndpoints": ["http://127.0.0.1:2379"]})
    assert isinstance(etcd, EtcdDatastore)
    assert etcd.renew_interval == pytest.approx(10 / 3)
    kube = load_datastore({"datastore": "kubernetes", "nodeName": "n",
                           "annotationPrefix": "example.org"})
    assert isinstance(kube, KubernetesDatastore)
    assert kube.annotation == "example.org/peer"
    assert kube.renew_interval is None


@pytest.mark.parametrize(("body", "field"), [
    ({"Network": "10.0.0.0/24", "SubnetLen": 16}, '"SubnetLen"'),
    ({"Network": "10.0.0.0/16", "SubnetLen": 31}, '"SubnetLen"'),
    ({"Network": "10.0.0.1/16"}, '"Network"'),
    ({"Network": "fd00::/48"}, '"Network"'),
    ({"IPv6Network": "fd00::/64", "IPv6SubnetLen": 48}, '"IPv6SubnetLen"'),
    ({"SubnetLen": 24}, '"SubnetLen" is set but "Network" is not'),
    ({}, '"Network"'),
    ({"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.0"}, "'SubnetMin'"),
    ({"Network": "10.0.0.0/16", "Backend": "vxlan"}, '"Backend"'),
])
def test_network_config_errors_name_the_field(body: dict[str, Any], field: str) -> None:

    with pytest.raises(InvalidNetworkConfig) as info:
        NetworkConfig.parse(json.dumps(body), "/pycni/network/config")
    assert field in info.value.msg
    assert "/pycni/network/config" in info.value.msg


def test_network_config_defaults_follow_flannel() -> None:
    config = NetworkConfig.parse('{"Network": "10.244.0.0/16"}', "k")
    assert config.subnet_len(4) == 24
    assert config.backend == {"Type": "vxlan"}
    assert NetworkConfig.parse('{"Network": "10.0.0.0/26"}', "k").subnet_len(4) == 27
