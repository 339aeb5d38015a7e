"""Shared fixtures: sandbox namespaces and a session-wide leak check."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from pycni.testing import (
    GO_PLUGIN_DIR,
    EtcdServer,
    KubeAPIServer,
    leftovers,
    temp_netns,
    unique_name,
)

# No per-example deadline: the suite shares two cores with kernel work, and a slow example is
# not a bug. On CI the examples are derived from each test's name, so a run is reproducible;
# locally they are random, to keep finding new cases.
settings.register_profile("pycni", deadline=None, print_blob=True)
settings.register_profile("pycni-ci", parent=settings.get_profile("pycni"), derandomize=True)
settings.load_profile("pycni-ci" if os.environ.get("CI") else "pycni")


def _is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _is_root():
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        # etcd and kube-apiserver run as any user on loopback: a cluster test needs root
        # only when it also makes namespaces (and then it carries the netns marker).
        if "netns" in item.keywords or (
            "integration" in item.keywords and "cluster" not in item.keywords
        ):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Fail the run if any test object this run made outlives the session.

    Only names this process handed out count: another test run on the machine (a second
    checkout, CI beside a developer) has its own objects with the same prefix.
    """
    yield
    if _is_root():
        leaked = sorted(leftovers(mine=True))
        assert not leaked, f"test objects left behind: {leaked}"


@pytest.fixture(scope="session", autouse=True)
def _trace_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Standalone plugin calls trace to the session's tmp dir, not the node's /run/pycni."""
    saved = os.environ.get("PYCNI_TRACE")
    os.environ["PYCNI_TRACE"] = str(tmp_path_factory.mktemp("trace") / "trace.jsonl")
    yield
    if saved is None:
        os.environ.pop("PYCNI_TRACE", None)
    else:
        os.environ["PYCNI_TRACE"] = saved


@pytest.fixture
def host_ns() -> Iterator[str]:
    """A fresh namespace that plays the node's (host's) role for a plugin under test."""
    with temp_netns("h") as path:
        yield path


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh container namespace (its path)."""
    with temp_netns("c") as path:
        yield path


@pytest.fixture
def netns2() -> Iterator[str]:
    """A second container namespace."""
    with temp_netns("c") as path:
        yield path


@pytest.fixture
def go_plugins() -> str:
    """The Go reference plugins' directory; skips when Debian's package is not installed."""
    if not (Path(GO_PLUGIN_DIR) / "bridge").exists():
        pytest.skip("containernetworking-plugins is not installed (/usr/lib/cni)")
    return GO_PLUGIN_DIR


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd for the session (loopback, private data dir); tests share it.

    Keep each test's keys under its own ``etcd_prefix``; a test that restarts or kills etcd
    starts its own ``EtcdServer`` instead.
    """
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_prefix(etcd_server: EtcdServer) -> Iterator[str]:
    """A key prefix no other test uses (``/pyt.../``); its keys are removed afterwards."""
    prefix = f"/{unique_name('etcd')}/"
    yield prefix
    etcd_server.delete_prefix(prefix)


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeAPIServer]:
    """A real kube-apiserver v1.20.2 for the session, on its own etcd; tests share it.

    Builds the server first if the cache lacks it (``scripts/build-kubernetes.sh``). Name
    cluster-scoped objects (Nodes, CRDs' objects) with ``unique_name`` and delete them; a test
    that restarts the server or rotates tokens starts its own ``KubeAPIServer``.
    """
    with EtcdServer() as etcd, KubeAPIServer(etcd.url) as server:
        yield server


@pytest.fixture
def kube_namespace(kube_apiserver: KubeAPIServer) -> Iterator[str]:
    """A fresh namespace on ``kube_apiserver`` (deleted afterwards; without a
    controller-manager it stays Terminating, which no other test sees)."""
    name = unique_name("ns")
    kube_apiserver.request("POST", "/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube_apiserver.request("DELETE", f"/api/v1/namespaces/{name}")
