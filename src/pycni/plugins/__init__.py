"""Every pycni plugin, one module per CNI type (``main/``, ``ipam/``, ``meta/``).

The registry of types lives in :mod:`pycni.invoke` (plain data, modules imported only when
a type is used); its names are re-exported here for callers that know them from this package.
"""

from ..invoke import REGISTRY, load_plugin, plugin_main

__all__ = ["REGISTRY", "load_plugin", "plugin_main"]
