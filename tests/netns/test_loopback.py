"""loopback in real namespaces, ours against the reference."""

from __future__ import annotations

import pytest

from pycni.spec import SUPPORTED_VERSIONS
from pycni.testing import call_plugin, cni_env, exec_plugin_in, ip_json

pytestmark = pytest.mark.netns


def _conf(version: str) -> dict[str, str]:
    return {"cniVersion": version, "name": "lo", "type": "loopback"}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_add_brings_lo_up(host_ns: str, netns: str, version: str) -> None:
    env = cni_env("ADD", container_id="c1", netns=netns, ifname="lo")
    out = call_plugin(host_ns, "loopback", env, _conf(version)).ok()
    assert out["cniVersion"] == version
    lo = ip_json(netns, "addr", "show", "lo")[0]
    assert "UP" in lo["flags"]
    check = call_plugin(host_ns, "loopback", {**env, "CNI_COMMAND": "CHECK"}, _conf("1.0.0"))
    assert check.status == 0


def test_matches_reference(host_ns: str, netns: str, netns2: str, go_plugins: str) -> None:
    conf = _conf("1.0.0")
    ours = call_plugin(host_ns, "loopback", cni_env("ADD", container_id="c1", netns=netns,
                                                    ifname="lo"), conf).ok()
    theirs = exec_plugin_in(host_ns, f"{go_plugins}/loopback",
                            cni_env("ADD", container_id="c1", netns=netns2, ifname="lo"),
                            conf).ok()
    theirs["interfaces"][0]["sandbox"] = netns
    assert ours == theirs


def test_del_is_idempotent_when_netns_is_gone(host_ns: str) -> None:
    env = cni_env("DEL", container_id="c1", netns="/run/netns/pyt-gone", ifname="lo")
    assert call_plugin(host_ns, "loopback", env, _conf("1.1.0")).status == 0


def test_check_fails_when_lo_is_down(host_ns: str, netns: str) -> None:
    env = cni_env("CHECK", container_id="c1", netns=netns, ifname="lo")
    call = call_plugin(host_ns, "loopback", env, _conf("1.1.0"))
    assert call.status == 1
    assert call.json["code"] == 3
