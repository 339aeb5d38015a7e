"""Integer keys have the kernel's bounds and interface names its rules, checked before any
netlink message is built (code 7 naming the key, never a crash)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from pycni.plugins.main.bridge import BridgeConfig
from pycni.plugins.main.host_device import HostDeviceConfig
from pycni.plugins.main.ipvlan import IPVlan
from pycni.plugins.main.macvlan import Macvlan
from pycni.plugins.main.ptp import PTPConfig
from pycni.plugins.main.tap import TapConfig
from pycni.plugins.main.vlan import Vlan
from pycni.plugins.main.vrf import VRFConfig
from pycni.plugins.meta.tuning import TuningConfig
from pycni.skel import CmdArgs
from pycni.spec import InvalidNetworkConfig, NetworkConfig


def args_for(ptype: str, **keys: Any) -> CmdArgs:
    full = {"cniVersion": "1.0.0", "name": "pytnet", "type": ptype, **keys}
    return CmdArgs(command="ADD", container_id="pyt-1", netns="/run/netns/pyt", ifname="eth0",
                   args="", path=("/opt/cni/bin",), stdin=json.dumps(full).encode(),
                   conf=NetworkConfig.parse(full))


LOADERS: dict[str, Callable[[CmdArgs], object]] = {
    "bridge": BridgeConfig.load,
    "ptp": PTPConfig.load,
    "tap": TapConfig.load,
    "macvlan": lambda a: Macvlan().load(a, resolve=False),
    "ipvlan": lambda a: IPVlan().load(a, resolve=False),
    "vlan": lambda a: Vlan().load(a, resolve=False),
    "host-device": HostDeviceConfig.load,
    "tuning": TuningConfig.load,
    "vrf": VRFConfig.load,
}
BASE = {"macvlan": {"master": "pyt0"}, "ipvlan": {"master": "pyt0"},
        "vlan": {"master": "pyt0", "vlanId": 5}, "host-device": {"device": "pyt0"},
        "vrf": {"vrfname": "pytvrf"}}

INT_CASES = [
    (ptype, "mtu", value) for ptype in ("bridge", "ptp", "tap", "macvlan", "ipvlan", "vlan",
                                       "tuning")
    for value in (10**30, 65536, 2**32, -1)
] + [("tuning", "txQLen", 2**32), ("macvlan", "bcqueuelen", 2**64), ("tap", "owner", 2**32),
     ("vrf", "table", 2**32), ("vlan", "vlanId", 4095)]


@pytest.mark.parametrize(("ptype", "key", "value"), INT_CASES)
def test_integer_out_of_range_is_code_7(ptype: str, key: str, value: int) -> None:
    args = args_for(ptype, **{**BASE.get(ptype, {}), key: value})
    with pytest.raises(InvalidNetworkConfig) as info:
        LOADERS[ptype](args)
    assert info.value.code == 7
    assert key in info.value.msg or "VLAN" in info.value.msg


@pytest.mark.parametrize(("ptype", "key"), [("bridge", "mtu"), ("macvlan", "mtu"),
                                             ("tuning", "mtu")])
def test_mtu_bounds_are_inclusive(ptype: str, key: str) -> None:
    LOADERS[ptype](args_for(ptype, **{**BASE.get(ptype, {}), key: 65535}))


NAME_CASES = [("bridge", "bridge"), ("tap", "bridge"), ("macvlan", "master"),
              ("ipvlan", "master"), ("vlan", "master"), ("host-device", "device"),
              ("vrf", "vrfname")]
BAD_NAMES = ["br\u0000x", "a" * 16, "br/x", "br x", "br\tx", "br:x", "..", "br\n"]


@pytest.mark.parametrize(("ptype", "key"), NAME_CASES)
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_interface_name_is_code_7(ptype: str, key: str, name: str) -> None:
    args = args_for(ptype, **{**BASE.get(ptype, {}), key: name})
    with pytest.raises(InvalidNetworkConfig, match=f'"{key}"') as info:
        LOADERS[ptype](args)
    assert info.value.code == 7


@pytest.mark.parametrize(("ptype", "key"), NAME_CASES)
def test_good_interface_names(ptype: str, key: str) -> None:
    for name in ("a" * 15, "eth0.100", "pyt-br_0"):
        LOADERS[ptype](args_for(ptype, **{**BASE.get(ptype, {}), key: name}))


def test_pyroute2_logs_no_traceback_in_a_plugin_process() -> None:
    # pyroute2 logs some netlink encoding failures as traceback text; a plugin process
    # gives its logger a handler that keeps one line per record.
    script = textwrap.dedent("""
        import logging, os
        from pycni.skel import Plugin

        class Noisy(Plugin):
            type_name = "pyt-noisy"
            def status(self, args):
                logging.getLogger("pyroute2.netlink").error(
                    "Traceback (most recent call last):\\n  File \\"x\\", line 1\\n"
                    "struct.error: argument out of range")

        os.environ.update(CNI_COMMAND="STATUS")
        Noisy.main()
    """)
    stdin = b'{"cniVersion": "1.1.0", "name": "pytnet", "type": "pyt-noisy"}'
    proc = subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stderr.decode().splitlines()
    assert lines == ["pyroute2.netlink: error: struct.error: argument out of range"]
