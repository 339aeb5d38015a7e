"""Every pycni plugin, one module per CNI type (``main/``, ``ipam/``, ``meta/``).

The registry of types and the runners live in :mod:`pycni.invoke`. ``plugin_main`` is
re-exported here only because executables written by ``pycni install`` before the shim
existed run ``from pycni.plugins import plugin_main; plugin_main("<type>")``; they keep
working until they are reinstalled.
"""

from ..invoke import plugin_main

__all__ = ["plugin_main"]
