"""CNI_NETNS that is not a live network namespace: refused promptly, and DEL tells gone from broken.

A FIFO, a device, a regular file or another kind of namespace is a caller error (code 999,
as the reference's "unknown FS magic"), for DEL too: only a namespace that is gone (no
path, or the empty mount point left after it was unmounted) lets DEL succeed without
touching the container. A netns that cannot be opened for another reason (EMFILE...) is an
error: the lease of an interface that may still exist must not be released.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni.host import _netns
from pycni.testing import PluginCall, call_plugin, cni_env, exec_plugin_in, ip_json, unique_name

pytestmark = pytest.mark.netns

# Far longer than a plugin call takes; a call that blocks on the path would hit it.
TIMEOUT = 30


def conf(tmp_path: Path, bridge: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge", "bridge": bridge,
            "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                     "ranges": [[{"subnet": "10.79.0.0/24"}]]}}


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pytnet"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


@pytest.fixture
def bridge_exe(tmp_path: Path) -> str:
    """pycni's bridge as an executable (what ``pycni install`` runs, without the agent)."""
    path = tmp_path / "bin" / "bridge"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\nfrom pycni.plugins import plugin_main\n\n"
                    "plugin_main('bridge')\n")
    path.chmod(0o755)
    return str(path)


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


def _regular_file(tmp_path: Path) -> str:
    path = tmp_path / "not-a-netns"
    path.write_text("hello\n")
    return str(path)


NOT_A_NETNS: dict[str, Callable[[Path], str]] = {
    "fifo": _fifo,
    "device": lambda _: "/dev/null",
    "regular file": _regular_file,
    "mount namespace": lambda _: "/proc/self/ns/mnt",
}


def run(host_ns: str, exe: str, command: str, netns: str, config: dict[str, Any]) -> PluginCall:
    env = cni_env(command, container_id="c1", netns=netns)
    try:
        return exec_plugin_in(host_ns, exe, env, config, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} with CNI_NETNS={netns} hung")


@pytest.mark.parametrize("kind", sorted(NOT_A_NETNS))
def test_add_refuses_a_path_that_is_not_a_netns(host_ns: str, tmp_path: Path, bridge_exe: str,
                                                kind: str) -> None:
    path = NOT_A_NETNS[kind](tmp_path)
    out = run(host_ns, bridge_exe, "ADD", path, conf(tmp_path, unique_name("br")))
    assert out.status == 1
    assert out.json["code"] == 999
    assert path in out.json["msg"]
    assert "not a network namespace" in out.json["msg"]
    assert leases(tmp_path) == set()
    # The bridge this failed ADD made is gone too (the reference leaves it, e.g. cni0).
    assert [link["ifname"] for link in ip_json(host_ns, "link", "show")] == ["lo"]


@pytest.mark.parametrize("kind", sorted(NOT_A_NETNS))
def test_del_with_a_path_that_is_not_a_netns_keeps_the_lease(
        host_ns: str, netns: str, tmp_path: Path, bridge_exe: str, kind: str) -> None:
    config = conf(tmp_path, unique_name("br"))
    run(host_ns, bridge_exe, "ADD", netns, config).ok()
    path = NOT_A_NETNS[kind](tmp_path)
    out = run(host_ns, bridge_exe, "DEL", path, config)
    assert out.status == 1
    assert out.json["code"] == 999
    assert path in out.json["msg"]
    assert leases(tmp_path) == {"10.79.0.2"}
    run(host_ns, bridge_exe, "DEL", netns, config).ok()
    assert leases(tmp_path) == set()


def test_an_unmounted_netns_is_gone(host_ns: str, netns: str, tmp_path: Path,
                                    bridge_exe: str) -> None:
    # What "ip netns delete" leaves for a moment (or for good if the unlink failed): the
    # empty file the namespace was mounted on. ADD: code 3; DEL: success, lease released.
    config = conf(tmp_path, unique_name("br"))
    mount_point = tmp_path / "unmounted"
    mount_point.touch()
    out = run(host_ns, bridge_exe, "ADD", str(mount_point), config)
    assert out.json["code"] == 3
    assert str(mount_point) in out.json["msg"]
    run(host_ns, bridge_exe, "ADD", netns, config).ok()
    run(host_ns, bridge_exe, "DEL", str(mount_point), config).ok()
    assert leases(tmp_path) == set()


def test_del_when_the_netns_cannot_be_opened_keeps_the_lease(
        host_ns: str, netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE on opening CNI_NETNS says nothing about the namespace: DEL fails, lease stays."""
    config = conf(tmp_path, unique_name("br"))
    env = cni_env("ADD", container_id="c1", netns=netns)
    call_plugin(host_ns, "bridge", env, config).ok()
    real_open = os.open

    def open_without_fds(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == netns:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), path)
        return real_open(path, flags, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(_netns.os, "open", open_without_fds)
        out = call_plugin(host_ns, "bridge", {**env, "CNI_COMMAND": "DEL"}, config)
    assert out.status == 1, out
    assert out.json["code"] == 100
    assert netns in out.json["msg"]
    assert leases(tmp_path) == {"10.79.0.2"}
    assert "eth0" in [x["ifname"] for x in ip_json(netns, "link", "show")]
    call_plugin(host_ns, "bridge", {**env, "CNI_COMMAND": "DEL"}, config).ok()
    assert leases(tmp_path) == set()
