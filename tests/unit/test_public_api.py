"""Each package's curated ``__all__``: sorted, without duplicates, and every name exists."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["store", "spec", "invoke", "skel", "host", "host.netfilter", "testing", "plugins",
            "runtime", "ipam", "kube", "daemon", "multi", "cli", "cluster",
            "cluster.backends"]


def _all_of(package: str) -> list[str]:
    try:
        module = importlib.import_module(f"pycni.{package}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"pycni.{package}",):
            pytest.skip(f"pycni.{package} does not exist yet")
        raise
    names = getattr(module, "__all__", None)
    if names is None:
        pytest.skip(f"pycni.{package} has no __all__ yet")
    return list(names)


def _sort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: SCREAMING_CASE, then CamelCase, then the rest."""
    if name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_and_unique(package: str) -> None:
    names = _all_of(package)
    assert all(isinstance(n, str) for n in names)
    assert len(names) == len(set(names)), "duplicates in __all__"
    assert names == sorted(names, key=_sort_key), "__all__ is not in isort-style order"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_exists_and_is_public(package: str) -> None:
    names = _all_of(package)
    module = importlib.import_module(f"pycni.{package}")
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"pycni.{package}.__all__ names what it lacks: {missing}"
    assert not [n for n in names if n.startswith("_")]


@pytest.mark.parametrize("package", PACKAGES)
def test_public_callables_and_classes_have_docstrings(package: str) -> None:
    names = _all_of(package)
    module = importlib.import_module(f"pycni.{package}")
    undocumented = [
        n for n in names
        if (callable(obj := getattr(module, n)) and not (getattr(obj, "__doc__", "") or "").strip())
    ]
    assert not undocumented, f"pycni.{package}: no docstring on {undocumented}"


def test_spec_and_skel_contracts_are_present() -> None:
    # names other packages build on; removing or renaming one breaks them
    from pycni import skel, spec

    for name in ("CNIError", "ErrorCode", "Result", "NetworkConfig", "DecodingFailure",
                 "IncompatibleCNIVersion", "InvalidNetworkConfig", "SUPPORTED_VERSIONS",
                 "parse_cidr", "parse_ip", "require_supported", "version_at_least"):
        assert name in spec.__all__
    for name in ("CmdArgs", "Plugin", "run_plugin", "run_plugin_bytes", "invoke",
                 "delegate_add", "delegate_del", "delegate_check", "parse_cni_args"):
        assert name in skel.__all__


def test_old_installed_executables_still_import_plugin_main() -> None:
    # `pycni install` before the shim wrote executables that run
    # `from pycni.plugins import plugin_main; plugin_main("<type>")`.
    from pycni import invoke, plugins

    assert plugins.plugin_main is invoke.plugin_main


@pytest.mark.parametrize("package", ["host", "host.netfilter", "invoke", "runtime"])
def test_lazy_packages_list_their_names_once(package: str) -> None:
    # The TYPE_CHECKING imports are the one list: __all__ is exactly those names.
    from pathlib import Path

    from pycni._lazy import type_checking_imports

    module = importlib.import_module(f"pycni.{package}")
    names = type_checking_imports(Path(module.__file__ or "").read_text(encoding="utf-8"))
    assert sorted(module.__all__) == sorted(names)
