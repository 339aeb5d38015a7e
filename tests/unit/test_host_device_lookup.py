"""host-device without a kernel: config validation, and finding devices in a fake sysfs.

The fake tree mimics what the kernel shows: ``/sys/devices/...`` holds the devices,
``/sys/bus/<bus>/devices/<name>`` are symlinks to them, a PCI function's ``driver`` is a
symlink to its driver, and a virtio-net function has its netdev under ``virtioN``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni.host import LinkInfo, Selector
from pycni.host import _hostdev as hostdev
from pycni.plugins.main.host_device import HostDeviceConfig
from pycni.skel import CmdArgs
from pycni.spec import InvalidNetworkConfig, KernelError, NetworkConfig

PCI = "0000:3d:00.1"
VIRTIO_PCI = "0000:00:03.0"
AUX = "mlx5_core.sf.4"


def link(name: str, index: int, *, bus: str = "", dev: str = "", mac: str = "") -> LinkInfo:
    return LinkInfo(name=name, index=index, mac=mac or f"02:00:00:00:00:{index:02x}", mtu=1500,
                    up=True, alias="", parent_bus=bus, parent_dev=dev)


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sys"
    devices = root / "devices" / "pci0000:00"
    drivers = root / "bus" / "pci" / "drivers"
    for name in ("ice", "vfio-pci", "virtio-pci"):
        (drivers / name).mkdir(parents=True)
    buses = {b: root / "bus" / b / "devices" for b in ("pci", "virtio", "auxiliary")}
    for d in buses.values():
        d.mkdir(parents=True)

    def pci(addr: str, driver: str) -> Path:
        path = devices / addr
        path.mkdir(parents=True)
        (path / "driver").symlink_to(drivers / driver)
        (buses["pci"] / addr).symlink_to(path)
        return path

    pci(PCI, "ice")
    pci("0000:3d:00.2", "vfio-pci")
    virtio = pci(VIRTIO_PCI, "virtio-pci") / "virtio2"
    virtio.mkdir()
    (buses["virtio"] / "virtio2").symlink_to(virtio)
    aux = devices / PCI / AUX
    aux.mkdir()
    (buses["auxiliary"] / AUX).symlink_to(aux)
    monkeypatch.setattr(hostdev, "SYSFS", str(root))
    return root


def links_fixture() -> list[LinkInfo]:
    return [link("lo", 1), link("ens1f1", 3, bus="pci", dev=PCI),
            link("eth0", 2, bus="virtio", dev="virtio2"),
            link("enp3s0f1s4", 4, bus="auxiliary", dev=AUX), link("pytveth", 5)]


def find(sel: Selector, links: list[LinkInfo], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(hostdev, "list_links", lambda: links)
    return hostdev.find_device(sel).name


def test_pci_and_auxiliary_devices_resolve_through_the_parent_device(
        sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = links_fixture()
    assert find(Selector(pci=PCI), links, monkeypatch) == "ens1f1"
    assert find(Selector(pci=VIRTIO_PCI), links, monkeypatch) == "eth0"  # via virtio2
    assert find(Selector(aux=AUX), links, monkeypatch) == "enp3s0f1s4"
    kp = str(sysfs / "devices" / "pci0000:00" / PCI)
    monkeypatch.setattr(hostdev, "check_kernelpath", lambda _p: None)
    assert find(Selector(kernelpath=kp), links, monkeypatch) == "ens1f1"


def test_a_device_of_another_namespace_is_not_found(
        sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The PCI device exists, but its netdev is not among this namespace's links.
    links = [link("lo", 1), link("ens1f1", 3)]
    with pytest.raises(KernelError, match="no network device of PCI device"):
        find(Selector(pci=PCI), links, monkeypatch)
    with pytest.raises(KernelError, match="does not exist"):
        find(Selector(pci="0000:99:00.0"), links, monkeypatch)


def test_sysfs_listing_is_used_only_when_it_shows_this_namespace(
        sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel without IFLA_PARENT_DEV_*: fall back to <device>/net/, if sysfs is ours.
    net = sysfs / "devices" / "pci0000:00" / PCI / "net" / "ens1f1"
    net.mkdir(parents=True)
    classnet = sysfs / "class" / "net"
    classnet.mkdir(parents=True)
    for name, index in (("lo", 1), ("ens1f1", 3)):
        (classnet / name).mkdir()
        (classnet / name / "ifindex").write_text(f"{index}\n")
    ours = [link("lo", 1), link("ens1f1", 3)]
    assert find(Selector(pci=PCI), ours, monkeypatch) == "ens1f1"
    # Same name, other ifindex: sysfs shows some other namespace, so its names mean nothing.
    theirs = [link("lo", 1), link("ens1f1", 7)]
    with pytest.raises(KernelError, match="no network device"):
        find(Selector(pci=PCI), theirs, monkeypatch)


def test_name_and_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    links = links_fixture()
    assert find(Selector(hwaddr="02-00-00-00-00-05"), links, monkeypatch) == "pytveth"
    assert find(Selector(hwaddr="02:00:00:00:00:03", pci=PCI), links, monkeypatch) == "ens1f1"
    with pytest.raises(KernelError, match="no link has MAC"):
        find(Selector(hwaddr="02:00:00:00:00:99"), links, monkeypatch)


def test_dpdk_and_device_id_kinds(sysfs: Path) -> None:
    assert not hostdev.is_dpdk_bound(PCI)
    assert hostdev.is_dpdk_bound("0000:3d:00.2")
    assert hostdev.device_id_kind(PCI) == "pci"
    assert hostdev.device_id_kind(AUX) == "aux"
    with pytest.raises(InvalidNetworkConfig, match="neither a PCI nor an auxiliary"):
        hostdev.device_id_kind("0000:99:00.0")
    with pytest.raises(InvalidNetworkConfig):
        hostdev.device_id_kind("../../etc")


def args_for(conf: dict[str, Any], command: str = "ADD") -> CmdArgs:
    full = {"cniVersion": "1.0.0", "name": "pythd", "type": "host-device", **conf}
    return CmdArgs(command=command, container_id="pyt-1", netns="/run/netns/pyt",
                   ifname="net1", args="", path=("/opt/cni/bin",),
                   stdin=json.dumps(full).encode(), conf=NetworkConfig.parse(full))


def test_config_selectors(sysfs: Path) -> None:
    conf = HostDeviceConfig.load(args_for({"pciBusID": "0000:00:00.0",
                                           "runtimeConfig": {"deviceID": AUX}}))
    assert conf.selector() == Selector(aux=AUX)  # deviceID overrides pciBusID
    conf = HostDeviceConfig.load(args_for({"runtimeConfig": {"deviceID": PCI}}))
    assert conf.selector() == Selector(pci=PCI)
    assert not conf.dpdk(strict=True)
    dpdk = HostDeviceConfig.load(args_for({"pciBusID": "0000:3d:00.2"}))
    assert dpdk.dpdk(strict=True)
    gone = HostDeviceConfig.load(args_for({"pciBusID": "0000:99:00.0"}))
    assert not gone.dpdk(strict=False)  # DEL of a vanished device: just try to move it out
    with pytest.raises(KernelError):
        gone.dpdk(strict=True)


@pytest.mark.parametrize(("conf", "message"), [
    ({}, 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"'),
    ({"hwaddr": "zz"}, 'invalid "hwaddr"'),
    ({"hwaddr": "02:00:00:00:00"}, 'invalid "hwaddr"'),
    ({"kernelpath": "devices/pci0000:00"}, 'invalid "kernelpath"'),
    ({"kernelpath": "/sys/devices/../class/net"}, 'invalid "kernelpath"'),
    ({"kernelpath": "/proc/self"}, 'invalid "kernelpath"'),
    ({"device": 3}, 'invalid "device"'),
    ({"device": "x", "runtimeConfig": {"deviceID": 5}}, "deviceID"),
    ({"device": "x", "runtimeConfig": {"deviceID": 0}}, '"runtimeConfig.deviceID"'),
    ({"device": "x", "runtimeConfig": {"deviceID": False}}, '"runtimeConfig.deviceID"'),
    ({"device": "x", "useInterfaceNetwork": True}, "useInterfaceNetwork"),
])
def test_config_errors(conf: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidNetworkConfig) as err:
        HostDeviceConfig.load(args_for(conf))
    assert message in str(err.value)
    assert err.value.code == 7


def test_hwaddr_forms() -> None:
    for mac in ("02:00:00:00:00:05", "02-00-00-00-00-05", "02:00:00:00:00:00:00:05",
                ":".join(["0a"] * 20)):
        assert HostDeviceConfig.load(args_for({"hwaddr": mac})).hwaddr == mac
