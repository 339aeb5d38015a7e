"""The dummy plugin: config handling everywhere; the kernel part where dummy exists.

These machines' kernel has no dummy links: there ADD must fail cleanly (code 100 naming the
module, lease released, nothing left behind) and the kernel tests skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.host import kind_supported, run_in_netns
from pycni.testing import call_plugin, cni_env, ip_json, ns_run, temp_netns

pytestmark = pytest.mark.netns

NO_BIN = "/nonexistent/pyt-cni-bin"


@pytest.fixture(scope="module")
def supported() -> bool:
    with temp_netns("k") as scratch:
        return run_in_netns(scratch, kind_supported, "dummy")


@pytest.fixture
def kernel(supported: bool) -> None:
    if not supported:
        pytest.skip("dummy kernel module missing")


def conf(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cniVersion": "1.1.0", "name": "pytdummy", "type": "dummy",
        "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                 "ranges": [[{"subnet": "10.83.0.0/24"}]]}}
    out.update(keys)
    return out


def call(command: str, host_ns: str, netns: str, config: dict[str, Any]) -> Any:
    env = cni_env(command, container_id="c1", netns=netns, path=NO_BIN)
    return call_plugin(host_ns, "dummy", env, config)


def names(netns: str) -> list[str]:
    return sorted(x["ifname"] for x in ip_json(netns, "link", "show"))


def leases(tmp_path: Path) -> set[str]:
    d = tmp_path / "ipam" / "pytdummy"
    return {p.name for p in d.iterdir() if not p.name.startswith(("last_", "lock"))} \
        if d.exists() else set()


def test_ipam_is_required(host_ns: str, netns: str, tmp_path: Path) -> None:
    failed = call("ADD", host_ns, netns, conf(tmp_path, ipam={}))
    assert failed.json["code"] == 7
    assert "ipam" in failed.json["msg"]


def test_without_the_module_add_fails_cleanly(supported: bool, host_ns: str, netns: str,
                                              tmp_path: Path) -> None:
    if supported:
        pytest.skip("the kernel has dummy links")
    failed = call("ADD", host_ns, netns, conf(tmp_path))
    assert failed.json["code"] == 100
    assert "dummy kernel module missing" in failed.json["msg"]
    assert leases(tmp_path) == set()
    assert names(netns) == ["lo"]


def test_status_and_gc(host_ns: str, tmp_path: Path) -> None:
    call_plugin(host_ns, "dummy", cni_env("STATUS", path=NO_BIN), conf(tmp_path)).ok()
    # Leases as dummy's ADD leaves them, made by its IPAM directly (the kernel here may lack
    # dummy links): GC has one attachment to keep and one to collect.
    for cid in ("c1", "c2"):
        env = cni_env("ADD", container_id=cid, netns="/run/netns/pyt-none", path=NO_BIN)
        call_plugin(host_ns, "host-local", env, conf(tmp_path)).ok()
    assert leases(tmp_path) == {"10.83.0.2", "10.83.0.3"}
    gc = conf(tmp_path, **{"cni.dev/valid-attachments": [{"containerID": "c1",
                                                           "ifname": "eth0"}]})
    call_plugin(host_ns, "dummy", cni_env("GC", path=NO_BIN), gc).ok()
    assert leases(tmp_path) == {"10.83.0.2"}


@pytest.mark.usefixtures("kernel")
def test_add_check_del(host_ns: str, netns: str, tmp_path: Path) -> None:
    config = conf(tmp_path)
    out = call("ADD", host_ns, netns, config).ok()
    assert out["interfaces"][0]["sandbox"] == netns
    link = ip_json(netns, "-d", "link", "show", "dev", "eth0")[0]
    assert link["linkinfo"]["info_kind"] == "dummy"
    assert "UP" in link["flags"]
    call("CHECK", host_ns, netns, dict(config, prevResult=out)).ok()
    ns_run(netns, "ip", "link", "set", "eth0", "down", check=True)
    assert "down" in call("CHECK", host_ns, netns, dict(config, prevResult=out)).json["msg"]
    call("DEL", host_ns, netns, config).ok()
    call("DEL", host_ns, netns, config).ok()
    assert names(netns) == ["lo"]
    assert leases(tmp_path) == set()
