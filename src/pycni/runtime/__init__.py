"""The runtime side of CNI: config discovery, plugin chains, the result cache, pods.

Names are imported from their submodule on first use (see :mod:`pycni._lazy`).
"""

from .._lazy import lazy_package

TYPE_CHECKING = False
if TYPE_CHECKING:
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
    from ._inspect import AttachmentReport, InspectReport, Item, inspect_target
    from ._pod import (
        DEFAULT_CNI_PATH,
        DEFAULT_IFNAME,
        LOOPBACK_NETWORK_NAME,
        PodNetworks,
        PodSetup,
        PodStatus,
        loopback_network,
    )

#: Public name -> the submodule that defines it.
_LAZY = {
    "AttachmentReport": "_inspect",
    "InspectReport": "_inspect",
    "Item": "_inspect",
    "inspect_target": "_inspect",
    "CACHE_KIND": "_cache",
    "CNIConfig": "_cni",
    "CachedAttachment": "_cache",
    "DEFAULT_BRIDGE": "_default",
    "DEFAULT_CACHE_DIR": "_cache",
    "DEFAULT_CNI_PATH": "_pod",
    "DEFAULT_CONF_DIR": "_discovery",
    "DEFAULT_DATA_DIR": "_default",
    "DEFAULT_IFNAME": "_pod",
    "DEFAULT_NETWORK_NAME": "_default",
    "DEFAULT_SUBNET": "_default",
    "DefaultExec": "_cni",
    "Discovery": "_discovery",
    "LOOPBACK_NETWORK_NAME": "_pod",
    "LoadedNetwork": "_discovery",
    "NetworkNotFound": "_discovery",
    "PluginExec": "_cni",
    "PluginInfo": "_cni",
    "PodNetworks": "_pod",
    "PodSetup": "_pod",
    "PodStatus": "_pod",
    "ResultCache": "_cache",
    "RuntimeConf": "_cni",
    "SkippedFile": "_discovery",
    "builtin_conflist": "_default",
    "builtin_network": "_default",
    "default_network": "_discovery",
    "discover": "_discovery",
    "go_json": "_cache",
    "load_file": "_discovery",
    "load_network": "_discovery",
    "loopback_network": "_pod",
}

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
    "LOOPBACK_NETWORK_NAME",
    "AttachmentReport",
    "CNIConfig",
    "CachedAttachment",
    "DefaultExec",
    "Discovery",
    "InspectReport",
    "Item",
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
    "go_json",
    "inspect_target",
    "load_file",
    "load_network",
    "loopback_network",
]

__getattr__, __dir__ = lazy_package(__name__, _LAZY, __all__)
