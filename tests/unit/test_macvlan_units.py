"""Link requests and config reading of macvlan/ipvlan/vlan/dummy/vrf, without a kernel.

:func:`pycni.host._sublink.link_request` is what the plugins send to create their links;
checking it here covers the kinds these machines' kernel cannot create.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from typing import Any

import pytest

from pycni.host import SubLink
from pycni.host._arp import garp_frame
from pycni.host._netlink import NLM_F_ACK, NLM_F_REQUEST, message
from pycni.host._sublink import RTM_NEWLINK, link_request, macvlan_bcqueuelen_request
from pycni.host._vrf import free_vrf_table
from pycni.plugins.main import _common
from pycni.plugins.main.dummy import Dummy
from pycni.plugins.main.ipvlan import IPVlan, _chained_master
from pycni.plugins.main.macvlan import Macvlan
from pycni.plugins.main.tap import Tap
from pycni.plugins.main.vlan import Vlan
from pycni.plugins.main.vrf import VRFConfig
from pycni.skel import CmdArgs
from pycni.spec import CNIError, KernelError, NetworkConfig


def args(conf: dict[str, Any], cni_args: str = "") -> CmdArgs:
    raw = json.dumps({"cniVersion": "1.0.0", "name": "pytnet", **conf}).encode()
    return CmdArgs(command="DEL", container_id="c1", netns="/run/netns/pytx", ifname="eth0",
                   args=cni_args, path=(), stdin=raw, conf=NetworkConfig.parse(raw))


def test_macvlan_request() -> None:
    link = SubLink(kind="macvlan", parent="eth1", mtu=1400, mac="02:00:00:00:00:01",
                   mode="vepa")
    assert link_request(link, "veth1", parent_index=7, netns_fd=9) == {
        "ifname": "veth1", "kind": "macvlan", "txqlen": 0, "link": 7, "net_ns_fd": 9,
        "mtu": 1400, "address": "02:00:00:00:00:01", "macvlan_mode": "vepa"}
    assert link_request(SubLink(kind="macvlan"), "x", parent_index=3,
                        netns_fd=None)["macvlan_mode"] == "bridge"


@pytest.mark.parametrize(("mode", "value"), [("", 0), ("l2", 0), ("l3", 1), ("l3s", 2)])
def test_ipvlan_request(mode: str, value: int) -> None:
    req = link_request(SubLink(kind="ipvlan", mode=mode), "x", parent_index=4, netns_fd=None)
    assert req == {"ifname": "x", "kind": "ipvlan", "txqlen": 0, "link": 4,
                   "ipvlan_mode": value}


def test_vlan_dummy_vrf_requests() -> None:
    assert link_request(SubLink(kind="vlan", vlan_id=100), "x", parent_index=2,
                        netns_fd=5) == {"ifname": "x", "kind": "vlan", "txqlen": 0,
                                        "link": 2, "net_ns_fd": 5, "vlan_id": 100}
    assert link_request(SubLink(kind="dummy"), "eth0", parent_index=None, netns_fd=None) == {
        "ifname": "eth0", "kind": "dummy", "txqlen": 0}
    assert link_request(SubLink(kind="vrf", table=10), "blue", parent_index=None,
                        netns_fd=None) == {"ifname": "blue", "kind": "vrf", "txqlen": 0,
                                           "vrf_table": 10}
    with pytest.raises(KernelError):
        link_request(SubLink(kind="vlan"), "x", parent_index=None, netns_fd=None)


def test_bcqueuelen_request_bytes() -> None:
    msg = message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, macvlan_bcqueuelen_request(12, 500))
    length, kind, flags, _, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags) == (len(msg), 16, 0x5)
    assert struct.unpack_from("=BxHiII", msg, 16)[2] == 12
    # IFLA_LINKINFO > IFLA_INFO_KIND "macvlan" + IFLA_INFO_DATA > BC_QUEUE_LEN(7) = 500
    assert b"macvlan\0" in msg
    assert msg.endswith(struct.pack("=HHI", 8, 7, 500))


def test_garp_frame() -> None:
    frame = garp_frame("02:00:00:00:00:01", ipaddress.IPv4Address("10.0.0.5"))
    assert frame[:6] == b"\xff" * 6
    assert frame[12:14] == b"\x08\x06"
    assert frame[22:28] == bytes.fromhex("020000000001")
    assert frame[28:32] == frame[38:42] == bytes([10, 0, 0, 5])


def test_macvlan_config_without_lookups() -> None:
    conf = Macvlan().load(args({"type": "macvlan", "master": "eth1", "mode": "passthru",
                                "mtu": 1400, "bcqueuelen": 10,
                                "ipam": {"type": "host-local"}}), resolve=False)
    assert conf.link == SubLink(kind="macvlan", parent="eth1", mtu=1400, mode="passthru",
                                bcqueuelen=10)
    assert conf.ipam_type == "host-local"
    assert conf.announce


@pytest.mark.parametrize("bad", [{"mode": "hub"}, {"mtu": "9000"}, {"bcqueuelen": -1},
                                 {"bcqueuelen": 2**32}, {"linkInContainer": "yes"},
                                 {"master": 5}])
def test_macvlan_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(CNIError) as err:
        Macvlan().load(args({"type": "macvlan", **bad}), resolve=False)
    assert err.value.code == 7


def test_ipvlan_chained_master() -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 0}]}
    plugin = IPVlan()
    a = args({"type": "ipvlan", "prevResult": prev})
    # resolve=True would look the master up in the kernel; the chained default is this:
    assert _chained_master(a) == "net1"
    conf = plugin.load(a, resolve=False)
    assert conf.prev is not None
    assert str(conf.prev.ips[0].address) == "10.0.0.2/24"
    plugin.require_ipam(conf)  # prevResult addresses stand in for IPAM
    with pytest.raises(CNIError):
        plugin.require_ipam(plugin.load(args({"type": "ipvlan"}), resolve=False))


@pytest.mark.parametrize(("vlan_id", "ok"), [(0, True), (4094, True), (4095, False),
                                             (-1, False), (True, False), ("5", False)])
def test_vlan_id_range(vlan_id: object, ok: bool) -> None:
    a = args({"type": "vlan", "master": "eth0", "vlanId": vlan_id})
    if ok:
        assert Vlan().load(a, resolve=False).link.vlan_id == vlan_id
    else:
        with pytest.raises(CNIError) as err:
            Vlan().load(a, resolve=False)
        assert err.value.code == 7


def test_vlan_needs_master() -> None:
    with pytest.raises(CNIError, match="master"):
        Vlan().load(args({"type": "vlan", "vlanId": 1}), resolve=False)


def test_dummy_needs_ipam() -> None:
    plugin = Dummy()
    with pytest.raises(CNIError, match="ipam"):
        plugin.require_ipam(plugin.load(args({"type": "dummy"}), resolve=False))


def test_vrf_config_and_free_table() -> None:
    assert VRFConfig.load(args({"type": "vrf", "vrfname": "blue", "table": 7})) == \
        VRFConfig("blue", 7)
    assert VRFConfig.load(args({"type": "vrf", "vrfname": "blue"})).table == 0
    # A null table is Go's nil *uint32: the VRF's table is picked as when absent.
    assert VRFConfig.load(args({"type": "vrf", "vrfname": "blue", "table": None})).table == 0
    assert free_vrf_table(set()) == 1
    assert free_vrf_table({1, 2, 4}) == 3


@pytest.mark.parametrize(("plugin", "ptype"), [(Macvlan(), "macvlan"), (Dummy(), "dummy"),
                                               (Tap(), "tap")])
def test_del_without_masquerade_dumps_no_addresses(monkeypatch: pytest.MonkeyPatch,
                                                   plugin: Any, ptype: str) -> None:
    # Only bridge and ptp tear rules down by address; every other DEL spares the dump.
    asked: list[bool] = []

    def delete_container_link(_args: CmdArgs, *, addresses: bool = False) -> None:
        asked.append(addresses)

    monkeypatch.setattr(_common, "delete_container_link", delete_container_link)
    plugin.delete(args({"type": ptype, "master": "eth1"}))
    assert asked == [False]
