"""The runtime side of CNI: config discovery, plugin chains, the result cache, pods.

The public names are listed once, as the imports under ``if TYPE_CHECKING:`` below: type
checkers read them there, and :func:`pycni._lazy.lazy_init` imports each from its submodule
on first use.
"""
# mypy: implicit-reexport
# ruff: noqa: F401

from .._lazy import lazy_init

# A plain constant rather than typing's: importing typing costs a plugin start ~10 ms.
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

__getattr__, __dir__, __all__ = lazy_init(__name__, __file__)
