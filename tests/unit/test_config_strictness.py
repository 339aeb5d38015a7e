"""Plugin keys are read as the reference reads them: a string is not a boolean, an empty
protocol is not tcp, a legacy key without its subnet is not ignored (each code 7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni.plugins.ipam.host_local import HostLocal
from pycni.plugins.ipam.static import Static
from pycni.plugins.main.bridge import BridgeConfig
from pycni.plugins.main.host_device import HostDeviceConfig
from pycni.plugins.main.macvlan import Macvlan
from pycni.plugins.main.ptp import PTPConfig
from pycni.plugins.main.tap import TapConfig
from pycni.plugins.meta.portmap import PortMapConfig
from pycni.plugins.meta.tuning import TuningConfig
from pycni.skel import CmdArgs, run_plugin_bytes
from pycni.spec import InvalidNetworkConfig, NetworkConfig
from pycni.testing import cni_env


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
    "host-device": HostDeviceConfig.load,
    "portmap": lambda a: PortMapConfig.load(a.conf.raw, a.conf.runtime_config),
    "tuning": TuningConfig.load,
}
BOOL_KEYS = [("bridge", "isGateway"), ("bridge", "hairpinMode"), ("bridge", "ipMasq"),
             ("ptp", "ipMasq"), ("tap", "multiQueue"), ("macvlan", "linkInContainer"),
             ("host-device", "useInterfaceNetwork"), ("portmap", "snat"),
             ("portmap", "masqAll"), ("tuning", "promisc"), ("tuning", "allmulti")]
EXTRA = {"host-device": {"device": "pyt0"}, "macvlan": {"master": "pyt0"},
         "portmap": {"backend": "iptables"}}


@pytest.mark.parametrize(("ptype", "key"), BOOL_KEYS)
@pytest.mark.parametrize("value", ["true", "false"])
def test_string_for_a_boolean_key_is_code_7(ptype: str, key: str, value: str) -> None:
    args = args_for(ptype, **EXTRA.get(ptype, {}), **{key: value})
    with pytest.raises(InvalidNetworkConfig, match=f'"{key}"') as info:
        LOADERS[ptype](args)
    assert info.value.code == 7


@pytest.mark.parametrize("protocol", ["", None])
def test_empty_portmap_protocol_is_code_7(protocol: Any) -> None:
    rc = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": protocol}]}
    with pytest.raises(InvalidNetworkConfig, match="protocol"):
        PortMapConfig.load({"backend": "iptables"}, rc)
    rc = {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}
    assert PortMapConfig.load({"backend": "iptables"}, rc).mappings[0].protocol == "tcp"


def _ipam_call(plugin: Any, ipam: dict[str, Any]) -> dict[str, Any]:
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge",
                        "ipam": ipam}).encode()
    env = cni_env("ADD", container_id="pyt-1", netns="/run/netns/pyt-none")
    status, out = run_plugin_bytes(plugin, env, stdin)
    result: dict[str, Any] = json.loads(out)
    return {"status": status, **result}


@pytest.mark.parametrize("ipam_type", ["dhcp", "host-local", "", None])
def test_static_checks_ipam_type(ipam_type: Any) -> None:
    out = _ipam_call(Static(), {"type": ipam_type, "addresses": [{"address": "10.1.0.2/24"}]})
    assert (out["status"], out["code"]) == (1, 7)
    assert "ipam.type" in out["msg"]


@pytest.mark.parametrize("address", ["10.1.0.2/24  ", " 10.1.0.2/24", "10.1.0.2/24\n"])
def test_static_address_with_spaces_is_code_7(address: str) -> None:
    out = _ipam_call(Static(), {"type": "static", "addresses": [{"address": address}]})
    assert (out["status"], out["code"]) == (1, 7)
    assert "ipam.addresses[0].address" in out["msg"]


@pytest.mark.parametrize("key", ["rangeStart", "rangeEnd", "gateway"])
def test_host_local_legacy_key_without_subnet_is_code_7(tmp_path: Path, key: str) -> None:
    out = _ipam_call(HostLocal(), {"type": "host-local", "dataDir": str(tmp_path),
                                   "ranges": [[{"subnet": "10.1.0.0/24"}]], key: "10.1.0.5"})
    assert (out["status"], out["code"]) == (1, 7)
    assert f"ipam.{key}" in out["msg"]


@pytest.mark.parametrize("ptype", ["bridge", "ptp", "tap", "macvlan", "host-device"])
@pytest.mark.parametrize("value", [0, False, [], {}])
def test_ipam_type_that_is_not_a_string_is_code_7(ptype: str, value: Any) -> None:
    # Go's encoding/json refuses a number or a boolean for the string; it was read as
    # "no IPAM" and the attachment came up without addresses.
    args = args_for(ptype, **EXTRA.get(ptype, {}), ipam={"type": value})
    with pytest.raises(InvalidNetworkConfig, match=r'"ipam\.type"') as info:
        LOADERS[ptype](args)
    assert info.value.code == 7
