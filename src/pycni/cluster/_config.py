"""The node agent's cluster config: which datastore, which backend, and the node's CNI config.

One JSON object (``pycni agent --cluster-config FILE``); the datastore's own options sit at
the top level beside the keys below and are checked by :func:`~pycni.cluster.load_datastore`::

    {
      "datastore": "etcd",                       # or "kubernetes"
      "nodeName": "node-1",
      "etcdEndpoints": ["http://10.0.0.1:2379"], # the datastore's options
      "backend": {"type": "vxlan", "vni": 1},    # "type" picks the backend; the rest is its
      "clusterCIDR": "10.244.0.0/16",            #   own options. Pod traffic leaving these
      "underlayInterface": "eth0",               #   CIDRs is masqueraded (ipMasq)
      "ipMasq": true,
      "reconcileInterval": 10,
      "confDir": "/etc/cni/net.d",
      "confFile": "10-pycni.conflist",
      "networkName": "pycni",
      "bridge": "cni0",
      "ipamDataDir": "/var/lib/cni/networks",
      "cniTemplate": "/etc/pycni/template.conflist"
    }

``clusterCIDR`` (a CIDR or a list, one per family) is required with the kubernetes datastore;
with etcd it defaults to the network config's ``Network``/``IPv6Network``. Without
``underlayInterface`` the interface of the default route is used. ``cniTemplate`` replaces the
built-in bridge + host-local + portmap list: a conflist in which ``@SUBNET4@``,
``@SUBNET6@``, ``@MTU@``, ``@NODE@`` and ``@CLUSTER_CIDR@`` are replaced by the node's values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._json import loads
from ..spec import (
    InvalidNetworkConfig,
    bool_field,
    check_ifname,
    ifname_problem,
    is_valid_name,
    str_field,
)
from ._base import Subnet

#: Keys of the cluster config that are not the datastore's.
CLUSTER_KEYS = frozenset({
    "backend", "clusterCIDR", "underlayInterface", "ipMasq", "reconcileInterval", "confDir",
    "confFile", "networkName", "bridge", "ipamDataDir", "cniTemplate"})

DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CONF_FILE = "10-pycni.conflist"
DEFAULT_NETWORK = "pycni"
DEFAULT_BRIDGE = "cni0"
DEFAULT_RECONCILE = 10.0
#: The placeholders a ``cniTemplate`` may use.
PLACEHOLDERS = ("@SUBNET4@", "@SUBNET6@", "@MTU@", "@NODE@", "@CLUSTER_CIDR@")


@dataclass(frozen=True)
class ClusterConfig:
    """The parsed cluster config (see the module docstring for the wire names)."""

    datastore: Mapping[str, Any]
    node_name: str
    backend_type: str
    backend_options: Mapping[str, Any]
    cluster_cidrs: tuple[Subnet, ...] = ()
    underlay_interface: str | None = None
    ip_masq: bool = True
    reconcile_interval: float = DEFAULT_RECONCILE
    conf_dir: str = DEFAULT_CONF_DIR
    conf_file: str = DEFAULT_CONF_FILE
    network_name: str = DEFAULT_NETWORK
    bridge: str = DEFAULT_BRIDGE
    ipam_data_dir: str | None = None
    cni_template: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def conf_path(self) -> Path:
        """Where the node's CNI config goes."""
        return Path(self.conf_dir) / self.conf_file

    @classmethod
    def parse(cls, data: Any, *, backends: Mapping[str, Any]) -> ClusterConfig:
        """Check ``data`` (the decoded JSON); InvalidNetworkConfig names the field.

        ``backends`` is the backend registry: ``backend.type`` must be one of its names.
        The datastore's options are checked when the datastore is built.
        """
        if not isinstance(data, dict):
            raise InvalidNetworkConfig(
                f"the cluster config must be a JSON object, got {type(data).__name__}")
        datastore = {k: v for k, v in data.items() if k not in CLUSTER_KEYS}
        node = data.get("nodeName")
        if not isinstance(node, str) or not node:
            raise InvalidNetworkConfig(
                f'invalid "nodeName": expected the node\'s name, got {node!r}')
        btype, boptions = _backend(data.get("backend"), backends)
        cidrs = _cidrs(data.get("clusterCIDR"))
        if not cidrs and data.get("datastore") == "kubernetes":
            raise InvalidNetworkConfig(
                '"clusterCIDR" is required with the kubernetes datastore: the pod network '
                'of the whole cluster, e.g. "10.244.0.0/16"')
        # Not ifname_field: "" is refused as every other string of this file is.
        underlay = str_field(data, "underlayInterface")
        if underlay is not None:
            check_ifname(underlay, "underlayInterface")
        masq = bool_field(data, "ipMasq", True)
        interval = data.get("reconcileInterval", DEFAULT_RECONCILE)
        if (isinstance(interval, bool) or not isinstance(interval, int | float)
                or not 0.1 <= interval <= 3600):
            raise InvalidNetworkConfig(
                f'invalid "reconcileInterval": expected seconds between 0.1 and 3600, '
                f"got {interval!r}")
        strings: dict[str, str | None] = {}
        for key in ("confDir", "confFile", "networkName", "bridge", "ipamDataDir",
                    "cniTemplate"):
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidNetworkConfig(
                    f'invalid "{key}": expected a non-empty string, got {value!r}')
            strings[key] = value
        conf_file = strings["confFile"] or DEFAULT_CONF_FILE
        if "/" in conf_file or not conf_file.endswith((".conflist", ".conf", ".json")):
            raise InvalidNetworkConfig(
                f'invalid "confFile": expected a file name ending in .conflist, got '
                f"{conf_file!r}")
        name = strings["networkName"] or DEFAULT_NETWORK
        if not is_valid_name(name):
            raise InvalidNetworkConfig(
                f'invalid "networkName": expected a CNI network name, got {name!r}')
        bridge = strings["bridge"] or DEFAULT_BRIDGE
        if ifname_problem(bridge) is not None:
            raise InvalidNetworkConfig(
                f'invalid "bridge": expected an interface name (at most 15 bytes), '
                f"got {bridge!r}")
        template = strings["cniTemplate"]
        if template is not None:
            check_template(template)
        return cls(datastore=datastore, node_name=node, backend_type=btype,
                   backend_options=boptions, cluster_cidrs=cidrs, underlay_interface=underlay,
                   ip_masq=masq, reconcile_interval=float(interval),
                   conf_dir=strings["confDir"] or DEFAULT_CONF_DIR, conf_file=conf_file,
                   network_name=name, bridge=bridge, ipam_data_dir=strings["ipamDataDir"],
                   cni_template=template, raw=dict(data))

    @classmethod
    def load(cls, path: str, *, backends: Mapping[str, Any],
             node_name: str | None = None) -> ClusterConfig:
        """Read and parse the file at ``path``; ``node_name`` replaces its ``nodeName``
        (one config for every node, the name from the downward API)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InvalidNetworkConfig(f"cannot read the cluster config {path}: "
                                       f"{exc.strerror}") from exc
        try:
            data = loads(text)
        except ValueError as exc:
            raise InvalidNetworkConfig(f"the cluster config {path} is not JSON",
                                       str(exc)) from exc
        if node_name is not None and isinstance(data, dict):
            data["nodeName"] = node_name
        return cls.parse(data, backends=backends)

    def check_subnets(self, subnets: tuple[Subnet, ...]) -> None:
        """The node's subnets must lie in the cluster CIDRs (else masquerade would be wrong)."""
        if not self.cluster_cidrs:
            return
        for subnet in subnets:
            family = [c for c in self.cluster_cidrs if c.version == subnet.version]
            if family and not any(subnet.subnet_of(c) for c in family):  # type: ignore[arg-type]
                raise InvalidNetworkConfig(
                    f'invalid "clusterCIDR": the node\'s subnet {subnet} is not inside '
                    f"{', '.join(map(str, family))}")


def _backend(value: Any, backends: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise InvalidNetworkConfig(
            f'invalid "backend": expected an object like {{"type": "vxlan"}}, got {value!r}')
    btype = value.get("type")
    if btype not in backends:
        valid = ", ".join(f'"{n}"' for n in sorted(backends))
        raise InvalidNetworkConfig(
            f'invalid "backend.type": expected one of {valid}, got {btype!r}')
    return str(btype), {k: v for k, v in value.items() if k != "type"}


def _cidrs(value: Any) -> tuple[Subnet, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise InvalidNetworkConfig(
            f'invalid "clusterCIDR": expected a CIDR or a list of them, got {value!r}')
    cidrs: list[Subnet] = []
    for item in values:
        try:
            cidr = ipaddress.ip_network(item, strict=True)
        except (TypeError, ValueError) as exc:
            raise InvalidNetworkConfig(
                f'invalid "clusterCIDR": expected a CIDR like "10.244.0.0/16", got {item!r}',
                str(exc)) from exc
        if any(c.version == cidr.version for c in cidrs):
            raise InvalidNetworkConfig(
                f'invalid "clusterCIDR": one CIDR per address family, got {values!r}')
        cidrs.append(cidr)
    return tuple(sorted(cidrs, key=lambda c: c.version))


def check_template(path: str) -> str:
    """The template's text; InvalidNetworkConfig naming ``cniTemplate`` if it is unusable."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidNetworkConfig(
            f'invalid "cniTemplate": cannot read {path}: {exc.strerror}') from exc
    probe = text
    for mark in PLACEHOLDERS:
        probe = probe.replace(mark, "0" if mark == "@MTU@" else "x")
    try:
        data = loads(probe)
    except ValueError as exc:
        raise InvalidNetworkConfig(
            f'invalid "cniTemplate": {path} is not a JSON conflist (with its placeholders '
            f"{', '.join(PLACEHOLDERS)} filled in)", str(exc)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("plugins"), list):
        raise InvalidNetworkConfig(
            f'invalid "cniTemplate": {path} must be a conflist with a "plugins" list')
    return text


__all__ = ["CLUSTER_KEYS", "PLACEHOLDERS", "ClusterConfig", "check_template"]
