"""The runtime side of CNI: config discovery, plugin exec, the result cache, pods."""

from ._cache import CACHE_KIND, DEFAULT_CACHE_DIR, CachedAttachment, ResultCache, go_json
from ._cni import CNIConfig, DefaultExec, PluginExec, PluginInfo, RuntimeConf
from ._default import (
    DEFAULT_BRIDGE,
    DEFAULT_DATA_DIR,
    DEFAULT_NETWORK_NAME,
    DEFAULT_SUBNET,
    builtin_conflist,
    builtin_network,
)
from ._discovery import (
    DEFAULT_CONF_DIR,
    Discovery,
    LoadedNetwork,
    NetworkNotFound,
    SkippedFile,
    default_network,
    discover,
    load_file,
    load_network,
)
from ._exec import DEFAULT_TIMEOUT, exec_plugin, find_plugin
from ._pod import (
    DEFAULT_CNI_PATH,
    DEFAULT_IFNAME,
    LOOPBACK_NETWORK_NAME,
    PodNetworks,
    PodSetup,
    PodStatus,
    loopback_network,
)

__all__ = [
    "CACHE_KIND",
    "DEFAULT_BRIDGE",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CNI_PATH",
    "DEFAULT_CONF_DIR",
    "DEFAULT_DATA_DIR",
    "DEFAULT_IFNAME",
    "DEFAULT_NETWORK_NAME",
    "DEFAULT_SUBNET",
    "DEFAULT_TIMEOUT",
    "LOOPBACK_NETWORK_NAME",
    "CNIConfig",
    "CachedAttachment",
    "DefaultExec",
    "Discovery",
    "LoadedNetwork",
    "NetworkNotFound",
    "PluginExec",
    "PluginInfo",
    "PodNetworks",
    "PodSetup",
    "PodStatus",
    "ResultCache",
    "RuntimeConf",
    "SkippedFile",
    "builtin_conflist",
    "builtin_network",
    "default_network",
    "discover",
    "exec_plugin",
    "find_plugin",
    "go_json",
    "load_file",
    "load_network",
    "loopback_network",
]
