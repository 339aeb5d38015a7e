"""The meta plugin's own configuration: Multus's keys, validated with the field named.

Example (``/etc/cni/net.d/00-multus.conf``)::

    {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
     "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
     "clusterNetwork": "pod-net", "namespaceIsolation": true}

The cluster network is ``clusterNetwork`` (a NAD ``[ns/]name`` in ``multusNamespace``, a
network name in ``confDir``, or a path to a file), else the first of ``delegates`` (inline
configurations, single or lists).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..spec import InvalidNetworkConfig, NetworkConfigList, bool_field, str_default

log = logging.getLogger("pycni.multi")

DEFAULT_CONF_DIR = "/etc/cni/multus/net.d"
DEFAULT_CNI_DIR = "/var/lib/cni/multus"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_MULTUS_NAMESPACE = "kube-system"
DEFAULT_SYSTEM_NAMESPACES = ("kube-system",)
DEFAULT_GLOBAL_NAMESPACES = ("default",)

#: Multus's log levels -> Python's.
LOG_LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "error": logging.ERROR,
              "panic": logging.CRITICAL}

#: Keys of the CNI config every plugin has, plus what a runtime adds.
_CNI_KEYS = frozenset({"cniVersion", "cniVersions", "name", "type", "capabilities",
                       "runtimeConfig", "args", "prevResult", "ipam", "dns",
                       "cni.dev/valid-attachments", "cni.dev/attachments"})
#: Multus's keys that pycni reads.
MULTUS_KEYS = frozenset({
    "kubeconfig", "clusterNetwork", "defaultNetworks", "delegates", "systemNamespaces",
    "multusNamespace", "namespaceIsolation", "globalNamespaces", "readinessindicatorfile",
    "confDir", "cniDir", "binDir", "logFile", "logLevel", "logToStderr"})
#: Keys old Multus configs carry that pycni accepts and ignores (thick-plugin and
#: auto-generation leftovers): refusing them would break an existing 00-multus.conf.
_IGNORED_KEYS = frozenset({"logOptions", "socketDir", "auxiliaryCNIChainName",
                           "retryDeleteOnError", "namespaceIsolationDisabled"})


def _names(raw: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of names, as a JSON list or (Multus's form) one comma-separated string."""
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise InvalidNetworkConfig(f'invalid "{key}": expected a list of names or a '
                                   f"comma-separated string, got {value!r}")
    return tuple(v for v in items if v)


@dataclass(frozen=True)
class MultusConfig:
    """The meta plugin's configuration (see the module docstring)."""

    name: str
    cni_version: str
    kubeconfig: str = ""
    cluster_network: str = ""
    default_networks: tuple[str, ...] = ()
    delegates: tuple[NetworkConfigList, ...] = ()
    system_namespaces: tuple[str, ...] = DEFAULT_SYSTEM_NAMESPACES
    multus_namespace: str = DEFAULT_MULTUS_NAMESPACE
    namespace_isolation: bool = False
    global_namespaces: tuple[str, ...] = DEFAULT_GLOBAL_NAMESPACES
    readiness_indicator_file: str = ""
    conf_dir: str = DEFAULT_CONF_DIR
    cni_dir: str = DEFAULT_CNI_DIR
    bin_dir: str = ""
    log_file: str = ""
    log_level: int = logging.ERROR
    log_to_stderr: bool = True
    #: What the runtime passed for the capabilities this config declares (``portMappings``
    #: from hostPorts, ``bandwidth``...): they go to the cluster network.
    runtime_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> MultusConfig:
        """Validate ``raw`` (the meta plugin's stdin); InvalidNetworkConfig names the field."""
        unknown = sorted(set(raw) - MULTUS_KEYS - _CNI_KEYS - _IGNORED_KEYS)
        if unknown:
            # Multus ignores keys it does not know; refusing them would break configs
            # written for a newer Multus.
            log.warning("ignoring unknown keys in the multus configuration: %s",
                        ", ".join(unknown))
        delegates_raw = raw.get("delegates")
        delegates: list[NetworkConfigList] = []
        if delegates_raw is not None:
            if not isinstance(delegates_raw, list):
                raise InvalidNetworkConfig(f'invalid "delegates": expected a list of network '
                                           f"configurations, got {delegates_raw!r}"[:300])
            for index, item in enumerate(delegates_raw):
                delegates.append(delegate_from_json(item, f"delegates[{index}]"))
        cluster = str_default(raw, "clusterNetwork", "")
        if not cluster and not delegates:
            raise InvalidNetworkConfig(
                'the multus configuration needs "clusterNetwork" or "delegates": '
                "expected the pod's cluster network, found neither")
        level_name = str_default(raw, "logLevel", "error").lower()
        if level_name not in LOG_LEVELS:
            raise InvalidNetworkConfig(f'invalid "logLevel": expected one of '
                                       f"{', '.join(LOG_LEVELS)}, got {level_name!r}")
        runtime_config = raw.get("runtimeConfig") or {}
        if not isinstance(runtime_config, dict):
            raise InvalidNetworkConfig(f'invalid "runtimeConfig": expected an object, got '
                                       f"{runtime_config!r}"[:300])
        return cls(
            name=str(raw.get("name") or "multus-cni-network"),
            cni_version=str(raw.get("cniVersion") or "0.1.0"),
            kubeconfig=str_default(raw, "kubeconfig", ""),
            cluster_network=cluster,
            default_networks=_names(raw, "defaultNetworks", ()),
            delegates=tuple(delegates),
            system_namespaces=_names(raw, "systemNamespaces", DEFAULT_SYSTEM_NAMESPACES),
            multus_namespace=str_default(raw, "multusNamespace", DEFAULT_MULTUS_NAMESPACE),
            namespace_isolation=bool_field(raw, "namespaceIsolation", False),
            global_namespaces=_names(raw, "globalNamespaces", DEFAULT_GLOBAL_NAMESPACES),
            readiness_indicator_file=str_default(raw, "readinessindicatorfile", ""),
            conf_dir=str_default(raw, "confDir", DEFAULT_CONF_DIR),
            cni_dir=str_default(raw, "cniDir", DEFAULT_CNI_DIR),
            bin_dir=str_default(raw, "binDir", ""),
            log_file=str_default(raw, "logFile", ""),
            log_level=LOG_LEVELS[level_name],
            log_to_stderr=bool_field(raw, "logToStderr", True),
            runtime_config=dict(runtime_config),
        )

    def namespace_allowed(self, pod_namespace: str, nad_namespace: str) -> bool:
        """Whether a pod in ``pod_namespace`` may use a NAD in ``nad_namespace``."""
        if not self.namespace_isolation or nad_namespace == pod_namespace:
            return True
        return nad_namespace in self.global_namespaces or nad_namespace == self.multus_namespace


def delegate_from_json(item: Any, where: str, *, default_name: str = "") -> NetworkConfigList:
    """A delegate's configuration (a conflist, or a single config that is upconverted).

    ``default_name`` is given to a configuration without ``name`` (a NAD's name).
    """
    if not isinstance(item, dict):
        raise InvalidNetworkConfig(f"invalid {where}: expected a network configuration "
                                   f"object, got {item!r}"[:300])
    if default_name and not item.get("name"):
        item = {**item, "name": default_name}
    try:
        if "plugins" in item and "type" not in item:
            return NetworkConfigList.parse(item)
        return NetworkConfigList.from_conf(item)
    except InvalidNetworkConfig as exc:
        raise type(exc)(f"invalid {where}: {exc.msg}", exc.details, code=exc.code) from exc
