"""Cluster networking: per-node pod subnets and the peers' data, from a datastore.

A :class:`Datastore` gives the local node its pod subnets, publishes what the other nodes
need to reach its pods (the *peer data*: backend name, VTEP MAC, underlay address...) and
follows the other nodes. Two implementations, picked by the agent config's ``datastore``:

- ``kubernetes``: subnets from the Node's ``spec.podCIDR(s)``, peer data in a Node
  annotation, all Nodes followed with list + watch (:class:`KubernetesDatastore`);
- ``etcd``: subnet leases carved from a cluster CIDR kept in etcd, peer data in the node's
  leased record (:class:`EtcdDatastore`).

This package is pure logic: the kernel work of a backend goes through ``pycni.host``.
Example agent config::

    {"datastore": "etcd", "nodeName": "node-1", "etcdEndpoints": ["http://10.0.0.1:2379"]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..spec import InvalidNetworkConfig
from ._base import (
    Datastore,
    DatastoreError,
    NodeRecord,
    PeerData,
    PeerUpdate,
    Subnet,
    SubnetLostError,
)
from ._cniconf import remove_conflist, render_conflist, write_conflist
from ._config import CLUSTER_KEYS, ClusterConfig
from ._masq import TABLE as MASQUERADE_TABLE
from ._masq import ensure_masquerade, masquerade_present, remove_masquerade
from ._node import NodeController, NodeStatus, make_backend
from .etcd import EtcdDatastore, NetworkConfig
from .kubernetes import KubernetesDatastore

#: The datastores by their ``datastore`` name.
DATASTORES: dict[str, type[EtcdDatastore] | type[KubernetesDatastore]] = {
    "etcd": EtcdDatastore,
    "kubernetes": KubernetesDatastore,
}

#: Keys of the agent config that every datastore accepts.
COMMON_OPTIONS = frozenset({"datastore", "nodeName"})


def load_datastore(config: Mapping[str, Any]) -> Datastore:
    """The datastore an agent config selects, built from its options.

    Raises InvalidNetworkConfig naming the field for an unknown ``datastore``, a missing
    ``nodeName``, an option that belongs to another datastore, or an unknown key.
    """
    name = config.get("datastore")
    if name not in DATASTORES:
        valid = ", ".join(f'"{n}"' for n in sorted(DATASTORES))
        raise InvalidNetworkConfig(
            f'invalid "datastore": expected one of {valid}, got {name!r}')
    node = config.get("nodeName")
    if not isinstance(node, str) or not node or "/" in node:
        raise InvalidNetworkConfig(
            f'invalid "nodeName": expected the node\'s name (no "/"), got {node!r}')
    cls = DATASTORES[name]
    for key in sorted(config):
        if key in COMMON_OPTIONS or key in cls.options:
            continue
        owners = [other for other, c in sorted(DATASTORES.items()) if key in c.options]
        if owners:
            raise InvalidNetworkConfig(
                f'"{key}" is an option of the {owners[0]} datastore, not of {name!r}: '
                f'remove it or set "datastore": "{owners[0]}"')
        raise InvalidNetworkConfig(f"unknown datastore option {key!r} for {name!r} "
                                   f"(known: {', '.join(sorted(COMMON_OPTIONS | cls.options))})")
    return cls.from_config(node, config)


__all__ = [
    "CLUSTER_KEYS",
    "COMMON_OPTIONS",
    "DATASTORES",
    "MASQUERADE_TABLE",
    "ClusterConfig",
    "Datastore",
    "DatastoreError",
    "EtcdDatastore",
    "KubernetesDatastore",
    "NetworkConfig",
    "NodeController",
    "NodeRecord",
    "NodeStatus",
    "PeerData",
    "PeerUpdate",
    "Subnet",
    "SubnetLostError",
    "ensure_masquerade",
    "load_datastore",
    "make_backend",
    "masquerade_present",
    "remove_conflist",
    "remove_masquerade",
    "render_conflist",
    "write_conflist",
]
