"""Load the parts of pyroute2 that pycni uses without its package ``__init__``.

``import pyroute2`` imports every API the library has (NDB, IPDB, conntrack, ethtool,
nl80211, wireguard, ...): about 180 ms of CPU, where the rtnetlink socket pycni uses
(``pyroute2.iproute.linux``) needs about a third of that. A plugin executable pays this on
every call that touches pyroute2, so :func:`install` puts a finder on ``sys.meta_path``: the
first ``import pyroute2...`` gets a stand-in package whose submodules load from the real
package directory as usual, and the first lookup of a package-level name that is not a
submodule (``from pyroute2 import IPRoute``, ``pyroute2.__version__``) runs the real
``__init__`` in the stand-in, so other code sees the complete package. A call that never
imports pyroute2 pays nothing (not even the search for it).
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec, PathFinder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any


class _StandInLoader:
    """Runs nothing when the package is imported; its ``__init__`` runs on first need."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def create_module(self, spec: ModuleSpec) -> None:  # noqa: ARG002 - the default module
        return None

    def exec_module(self, package: ModuleType) -> None:
        real = self._real

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
            package.__loader__ = real
            real.exec_module(package)
            return getattr(package, name)

        package.__getattr__ = complete  # type: ignore[method-assign]


class _Finder:
    """Hands out the stand-in for ``pyroute2``, once; every other name is not its business.

    It stays on ``sys.meta_path`` once used: importlib walks that live list, and removing an
    entry while another thread's import is walking it would make that import skip a finder.
    """

    used = False

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None,  # noqa: ARG003 - API
                  target: ModuleType | None = None) -> ModuleSpec | None:  # noqa: ARG003
        if cls.used or name != "pyroute2":
            return None
        # Imports of one name are serialised by importlib's module lock: no second caller.
        cls.used = True
        spec = PathFinder.find_spec(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # not installed (the import fails as usual) or unusual: leave it
        spec.loader = _StandInLoader(spec.loader)  # type: ignore[assignment]
        return spec


def install() -> None:
    """Put the lazy ``pyroute2`` finder in place unless pyroute2 is already imported."""
    if "pyroute2" in sys.modules or _Finder in sys.meta_path:
        return
    sys.meta_path.insert(0, _Finder)
