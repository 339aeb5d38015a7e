"""tap without a kernel: config keys, where the MAC comes from, flags, SELinux gating."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni.host import _tap as tap
from pycni.plugins.main.tap import TapConfig
from pycni.skel import CmdArgs
from pycni.spec import InvalidNetworkConfig, NetworkConfig


def args_for(conf: dict[str, Any], cni_args: str = "") -> CmdArgs:
    full = {"cniVersion": "1.0.0", "name": "pyttap", "type": "tap", **conf}
    return CmdArgs(command="ADD", container_id="pyt-1", netns="/run/netns/pyt",
                   ifname="tap0", args=cni_args, path=("/opt/cni/bin",),
                   stdin=json.dumps(full).encode(), conf=NetworkConfig.parse(full))


def test_keys() -> None:
    conf = TapConfig.load(args_for({"mtu": 9000, "multiQueue": True, "owner": 0,
                                    "group": 4294967295, "bridge": "br0",
                                    "ipam": {"type": "host-local"}}))
    assert conf == TapConfig(mtu=9000, multi_queue=True, owner=0, group=4294967295,
                             bridge="br0", ipam_type="host-local")
    assert TapConfig.load(args_for({})) == TapConfig()


def test_mac_precedence_config_then_cni_args_then_runtime_config() -> None:
    base = {"mac": "02:00:00:00:00:01"}
    assert TapConfig.load(args_for(base)).mac == "02:00:00:00:00:01"
    env = "IgnoreUnknown=1;MAC=02:00:00:00:00:02;K8S_POD_NAME=x"
    assert TapConfig.load(args_for(base, env)).mac == "02:00:00:00:00:02"
    rt = {**base, "runtimeConfig": {"mac": "02-00-00-00-00-0A"}}
    assert TapConfig.load(args_for(rt, env)).mac == "02:00:00:00:00:0a"


@pytest.mark.parametrize(("conf", "cni_args", "message"), [
    ({"mac": "nope"}, "", "invalid MAC address 'nope' in \"mac\""),
    ({}, "MAC=02:00:00:00:00", "CNI_ARGS MAC"),
    ({"runtimeConfig": {"mac": 7}}, "", "runtimeConfig.mac"),
    ({"owner": -1}, "", '"owner"'),
    ({"group": 4294967296}, "", '"group"'),
    ({"owner": "1000"}, "", '"owner"'),
    ({"mtu": "1500"}, "", '"mtu"'),
    ({"multiQueue": "maybe"}, "", "multiQueue"),
    ({"bridge": 1}, "", '"bridge"'),
])
def test_config_errors(conf: dict[str, Any], cni_args: str, message: str) -> None:
    with pytest.raises(InvalidNetworkConfig) as err:
        TapConfig.load(args_for(conf, cni_args))
    assert message in str(err.value)
    assert err.value.code == 7


def test_flags() -> None:
    single = tap.tap_flags(multi_queue=False)
    wanted = tap.IFF_TAP | tap.IFF_NO_PI | tap.IFF_VNET_HDR
    assert single & wanted == wanted
    assert single & tap.IFF_TUN_EXCL  # never attach to an existing device of that name
    assert not single & tap.IFF_MULTI_QUEUE
    assert tap.tap_flags(multi_queue=True) & tap.IFF_MULTI_QUEUE


def test_selinux_context_needs_selinux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap, "SELINUX_ENFORCE", str(tmp_path / "no-selinuxfs"))
    with pytest.raises(InvalidNetworkConfig, match="SELinux is not enabled"):
        tap.create_tap_labelled("tap0", "system_u:system_r:container_t:s0")
