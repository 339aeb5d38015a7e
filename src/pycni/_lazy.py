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


def _public_order(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: SCREAMING_CASE, then CamelCase, then the rest.
    if name.isupper():
        return 0, name
    return (1 if name[:1].isupper() else 2), name


def type_checking_imports(source: str) -> "dict[str, str | None]":
    """Public name -> submodule, read from the ``if TYPE_CHECKING:`` block of ``source``.

    The block holds only ``from .sub import a, b`` (parenthesised or not) and
    ``from . import sub`` lines; a submodule imported whole maps to None. Anything else
    there is a ValueError, so a package cannot export a name by accident.
    """
    start = source.index("\nif TYPE_CHECKING:\n") + len("\nif TYPE_CHECKING:\n")
    lines = []
    for line in source[start:].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line.strip())
    block = " ".join(lines).replace("(", " ").replace(")", " ").replace(",", " ")
    names: dict[str, str | None] = {}
    module = None
    for word in block.split():
        if word == "from":
            module = ""
        elif module == "" and word.startswith("."):
            module = word[1:]
        elif word == "import" and module is not None:
            continue
        elif module is not None and word.isidentifier() and word != "as":
            names[word] = module or None
        else:
            raise ValueError(f"unexpected {word!r} in the TYPE_CHECKING imports")
    return names


def lazy_init(package: str, init_file: str
              ) -> "tuple[Callable[[str], object], Callable[[], list[str]], list[str]]":
    """``(__getattr__, __dir__, __all__)`` for a package whose ``__init__`` (``init_file``)
    lists its public names once, as imports under ``if TYPE_CHECKING:``.

    Type checkers read those imports; at run time they are read here as text (a few tens
    of microseconds, far less than importing the submodules) and each name is imported
    from its submodule on first use. ``__all__`` is every such name, sorted.
    """
    with open(init_file, encoding="utf-8") as fh:
        names = type_checking_imports(fh.read())
    public = sorted(names, key=_public_order)
    getattr_, dir_ = lazy_package(package, {k: v for k, v in names.items() if v}, public)
    return getattr_, dir_, public


def defer_modules(*names: str) -> None:
    """Make ``import name`` cheap in this process: the real module loads on first use.

    For a plugin process: ``dataclasses`` imports ``inspect`` (which loads ``ast``, ``dis``,
    ``tokenize``...: ~8 ms) only to write a signature into the ``__doc__`` of a dataclass
    that has no docstring, and every pycni dataclass has one. ``sys.modules`` gets a
    stand-in whose first attribute lookup imports the real module (and every later lookup
    forwards to it); a module already imported is left alone. (``importlib.util.LazyLoader``
    does not help: the import statement itself reads the module's ``__spec__``, which loads
    it.)
    """
    import types

    for name in names:
        if name in sys.modules:
            continue
        stand_in = types.ModuleType(name, f"{name}, loaded on first use")

        def load(attr: str, name: str = name, stand_in: types.ModuleType = stand_in) -> object:
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            return getattr(importlib.import_module(name), attr)

        stand_in.__getattr__ = load  # type: ignore[method-assign]
        sys.modules[name] = stand_in
