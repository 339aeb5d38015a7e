"""Load the parts of pyroute2 that pycni uses without its package ``__init__``.

``import pyroute2`` imports every API the library has (NDB, IPDB, conntrack, ethtool,
nl80211, wireguard, ...): about 180 ms of CPU, where the rtnetlink socket pycni uses
(``pyroute2.iproute.linux``) needs about a third of that. A plugin executable pays this on
every call, so :func:`install` puts a stand-in for the ``pyroute2`` package into
``sys.modules`` before anything imports it: submodules load from the real package directory
as usual, and the first lookup of a package-level name that is not a submodule
(``from pyroute2 import IPRoute``, ``pyroute2.__version__``) runs the real ``__init__`` in
the stand-in, so other code sees the complete package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.machinery import PathFinder


def install() -> None:
    """Put the lazy ``pyroute2`` package in place unless pyroute2 is already imported."""
    if "pyroute2" in sys.modules:
        return
    spec = PathFinder.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed (the import fails later, where it is used) or unusual
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> object:
        if name.startswith("__") and name != "__version__":
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")
        try:
            return importlib.import_module(f"pyroute2.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pyroute2.{name}":
                raise
        # Not a submodule: complete the package, once, with its own __init__.
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package
