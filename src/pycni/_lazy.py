"""Packages whose public names are imported from their submodules on first use (PEP 562).

A plugin executable pays for every module it imports on every call; with a lazy package
``__init__`` it loads only the submodules whose names it uses. The package keeps its
curated ``__all__`` and imports everything under ``if TYPE_CHECKING:`` for type checkers.
"""

import importlib
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def lazy_package(package: str, names: "Mapping[str, str]",
                 public: "list[str]") -> "tuple[Callable[[str], object], Callable[[], list[str]]]":
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to its submodule.

    Any other attribute that names a submodule (``host.netfilter``) imports it; a name that is
    neither is an AttributeError. A resolved name is stored in the package, so the lookup
    runs once per name.
    """

    def __getattr__(name: str) -> object:  # noqa: N807 - the module hook's own name
        if name.startswith("__"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = names.get(name)
        if module is not None:
            value = getattr(importlib.import_module(f"{package}.{module}"), name)
        else:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__
