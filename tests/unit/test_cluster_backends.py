"""Backend options: defaults, flannel's spelling, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from pycni.cluster.backends import BACKENDS, HostGwBackend, VxlanBackend, load_backend
from pycni.cluster.backends.vxlan import vtep_mac
from pycni.spec import ErrorCode, InvalidNetworkConfig


def test_vxlan_defaults_are_flannels() -> None:
    backend = load_backend({"type": "vxlan"})
    assert isinstance(backend, VxlanBackend)
    assert (backend.vni, backend.port, backend.mtu, backend.device) == (1, 8472, 0, "pycni.1")
    assert isinstance(load_backend("vxlan"), VxlanBackend)
    assert isinstance(load_backend({}), VxlanBackend)


def test_vxlan_options_and_flannel_spelling() -> None:
    backend = load_backend({"Type": "vxlan", "VNI": 42, "Port": 4789})
    assert isinstance(backend, VxlanBackend)
    assert (backend.vni, backend.port, backend.device) == (42, 4789, "pycni.42")
    backend = load_backend({"type": "vxlan", "mtu": 1400, "device": "ovl0"})
    assert isinstance(backend, VxlanBackend)
    assert (backend.mtu, backend.device) == (1400, "ovl0")


def test_host_gw_has_no_options() -> None:
    assert isinstance(load_backend({"type": "host-gw"}), HostGwBackend)
    assert HostGwBackend.options == frozenset()
    assert set(BACKENDS) == {"vxlan", "host-gw"}


@pytest.mark.parametrize(("options", "needle"), [
    ({"type": "udp"}, '"backend.type": expected one of "host-gw", "vxlan", got \'udp\''),
    ({"type": "host-gw", "vni": 1}, '"backend.vni" is an option of the vxlan backend'),
    ({"type": "host-gw", "port": 1}, 'set "type": "vxlan"'),
    ({"type": "vxlan", "directRouting": True}, '"backend.directRouting" for "vxlan"'),
    ({"type": "vxlan", "vni": 0}, '"backend.vni": expected a VXLAN network id'),
    ({"type": "vxlan", "vni": 2**24}, "got 16777216"),
    ({"type": "vxlan", "vni": "1"}, "got '1'"),
    ({"type": "vxlan", "vni": True}, "got True"),
    ({"type": "vxlan", "port": 70000}, '"backend.port": expected a UDP port'),
    ({"type": "vxlan", "mtu": 10**30}, '"backend.mtu"'),
    ({"type": "vxlan", "mtu": 20}, "at least 68"),
    ({"type": "vxlan", "device": "a/b"}, '"backend.device": expected an interface name'),
    ({"type": "vxlan", "device": "x" * 16}, '"backend.device"'),
    (["vxlan"], 'invalid "backend": expected an object'),
])
def test_bad_options_name_the_field(options: Any, needle: str) -> None:
    with pytest.raises(InvalidNetworkConfig) as info:
        load_backend(options)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert needle in str(info.value)


def test_vtep_mac_is_stable_unicast_and_local() -> None:
    mac = vtep_mac("node-1", 1)
    assert mac == vtep_mac("node-1", 1)
    assert mac != vtep_mac("node-2", 1)
    assert mac != vtep_mac("node-1", 2)
    first = int(mac[:2], 16)
    assert first & 0x02
    assert not first & 0x01
