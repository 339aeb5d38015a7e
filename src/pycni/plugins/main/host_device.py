"""host-device: move an existing host network device into the container, and back on DEL.

Example config::

    {"cniVersion": "1.1.0", "name": "uplink", "type": "host-device", "device": "enp3s0f1",
     "ipam": {"type": "host-local", "subnet": "192.168.50.0/24"}}

The device is chosen by one of ``device`` (name), ``hwaddr`` (MAC), ``kernelpath`` (its
parent's ``/sys/devices/...`` path), ``pciBusID`` or ``runtimeConfig.deviceID`` (a PCI or
auxiliary-bus device, e.g. from an SR-IOV device plugin; it overrides ``pciBusID``). The
first of those that is set wins, in that order, as in the reference. In the container it is
named ``CNI_IFNAME`` and set up; with ``ipam`` it gets the addresses and routes.

A PCI device bound to a userspace driver (vfio-pci, uio_pci_generic, igb_uio: DPDK) has no
netdev: it is left alone, IPAM is not run and the result has no interfaces.

DEL moves the device back under its original name (kept in the link's alias, as the
reference does) and, unlike the reference, restores its MTU, alias and up/down state from
before ADD, recorded in ``<dataDir>/<containerID>_<ifname>.json`` (``dataDir`` default
``/run/cni/host-device``). If the container's namespace is already gone there is nothing
to move: the kernel returns a physical device to the *initial* namespace when its
namespace dies, and destroys a virtual one (a veth end, a macvlan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ... import host
from ...host import NetNSNotFound
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import CNIError, Interface, InvalidNetworkConfig, IOFailure, Result, bool_field
from ...store import RecordStore
from .._fields import ifname_field, str_default, valid_attachments
from ._common import (
    apply_dns,
    check_container,
    gc_attachments,
    ipam_check,
    ipam_del,
    ipam_into,
    ipam_status,
    ipam_type,
    prev_result,
    run_with_rollback,
)

DEFAULT_DATA_DIR = "/run/cni/host-device"

# Go's net.ParseMAC forms with ':' or '-': EUI-48, EUI-64 and 20-byte InfiniBand.
_HWADDR_RE = re.compile(r"^[0-9a-fA-F]{2}(?:([:-])[0-9a-fA-F]{2})(?:\1[0-9a-fA-F]{2}){4}"
                        r"(?:(?:\1[0-9a-fA-F]{2}){2}|(?:\1[0-9a-fA-F]{2}){14})?$")


@dataclass(frozen=True)
class HostDeviceConfig:
    """The host-device plugin's keys (``pci`` is ``pciBusID`` or a PCI ``deviceID``)."""

    device: str = ""
    hwaddr: str = ""
    kernelpath: str = ""
    pci: str = ""
    device_id: str = ""
    ipam_type: str = ""
    data_dir: str = DEFAULT_DATA_DIR

    @classmethod
    def load(cls, args: CmdArgs) -> HostDeviceConfig:
        """Read and validate the keys; at least one way of naming the device is required."""
        raw = args.conf.raw
        device_id = str_default(args.conf.runtime_config, "deviceID", "", what="runtimeConfig.")
        conf = cls(device=ifname_field(raw, "device") or "", hwaddr=str_default(raw, "hwaddr", ""),
                   kernelpath=str_default(raw, "kernelpath", ""),
                   pci=str_default(raw, "pciBusID", ""), device_id=device_id,
                   ipam_type=ipam_type(args),
                   data_dir=str_default(raw, "dataDir", DEFAULT_DATA_DIR))
        if not (conf.device or conf.hwaddr or conf.kernelpath or conf.pci or conf.device_id):
            raise InvalidNetworkConfig('specify either "device", "hwaddr", "kernelpath" or '
                                       '"pciBusID"')
        if conf.hwaddr and not _HWADDR_RE.match(conf.hwaddr):
            raise InvalidNetworkConfig(f'invalid "hwaddr" {conf.hwaddr!r}: expected a MAC '
                                       "address like 0a:58:0a:00:00:05")
        if conf.kernelpath:
            host.check_kernelpath(conf.kernelpath)
        if conf.pci and "/" in conf.pci:
            raise InvalidNetworkConfig(f'invalid "pciBusID" {conf.pci!r}')
        if bool_field(raw, "useInterfaceNetwork"):
            raise InvalidNetworkConfig('"useInterfaceNetwork" is not supported by pycni',
                                       "configure the container's addresses with ipam")
        return conf

    @classmethod
    def load_for_teardown(cls, args: CmdArgs) -> HostDeviceConfig:
        """What DEL and GC read: the record directory, IPAM, and a PCI address for the DPDK
        test. ADD's rules (a device must be named, hwaddr's form, ...) do not apply, and a
        value that does not fit is left out: ADD refused it, so nothing depends on it."""
        raw = args.conf.raw

        def text(value: Any) -> str:
            return value if isinstance(value, str) else ""

        def name(value: Any) -> str:  # a sysfs path component
            return value if isinstance(value, str) and "/" not in value else ""

        data_dir = raw.get("dataDir")
        # The other selectors only tell the DPDK test that a netdev was asked for.
        return cls(device=text(raw.get("device")), hwaddr=text(raw.get("hwaddr")),
                   kernelpath=text(raw.get("kernelpath")), pci=name(raw.get("pciBusID")),
                   device_id=name(args.conf.runtime_config.get("deviceID")),
                   ipam_type=ipam_type(args, strict=False),
                   data_dir=data_dir if isinstance(data_dir, str) and data_dir
                   else DEFAULT_DATA_DIR)

    def selector(self) -> host.Selector:
        """Which device to take; ``deviceID`` decides between PCI and auxiliary device."""
        pci, aux = self.pci, ""
        if self.device_id:
            if host.device_id_kind(self.device_id) == "pci":
                pci = self.device_id
            else:
                pci, aux = "", self.device_id
        return host.Selector(device=self.device, hwaddr=self.hwaddr,
                                kernelpath=self.kernelpath, pci=pci, aux=aux)

    def dpdk(self, *, strict: bool) -> bool:
        """True if the selected PCI device is bound to a DPDK driver (so has no netdev).

        Only a PCI address can select such a device. With ``strict`` off (DEL) a device
        that has vanished, or a deviceID that no longer resolves, counts as "not DPDK".
        """
        try:
            sel = self.selector()
            if not sel.pci or sel.device or sel.hwaddr or sel.kernelpath:
                return False
            return host.is_dpdk_bound(sel.pci)
        except CNIError:
            if strict:
                raise
            return False


def _store(conf: HostDeviceConfig) -> RecordStore:
    return RecordStore(conf.data_dir)


def _record(args: CmdArgs, dev: host.LinkInfo) -> dict[str, Any]:
    """What DEL needs to put ``dev`` back as it was (and GC to match the attachment)."""
    return {"network": args.conf.name, "containerID": args.container_id,
            "ifname": args.ifname, "device": dev.name, "mtu": dev.mtu, "up": dev.up,
            "alias": dev.alias}


def _return_device(args: CmdArgs, conf: HostDeviceConfig,
                   known: dict[str, Any] | None = None) -> str | None:
    """Move ``CNI_IFNAME`` back to the host and restore what ADD recorded (or ``known``).

    The name it got back, or None if there was nothing to move (no netns, no link).
    """
    path = _store(conf).path(args.container_id, args.ifname)
    name = None
    if args.netns:
        try:
            with enter_netns(args.netns) as ns:
                name = host.move_out(ns, args.ifname)
        except NetNSNotFound:
            name = None
    saved = RecordStore.load(path) or known
    if name is not None and saved and saved.get("device") == name:
        host.restore_state(name, mtu=int(saved.get("mtu") or 0), up=bool(saved.get("up")),
                              alias=str(saved.get("alias") or ""))
    RecordStore.remove(path)
    return name


class HostDevice(Plugin):
    """The ``host-device`` plugin."""

    type_name = "host-device"

    def add(self, args: CmdArgs) -> Result:
        conf = HostDeviceConfig.load(args)
        if conf.dpdk(strict=True):
            # Nothing to move and nothing to address: the device belongs to a DPDK app.
            return Result()
        return run_with_rollback(args, lambda rollback: self._add(args, conf, rollback))

    def _add(self, args: CmdArgs, conf: HostDeviceConfig, rollback: host.Undo) -> Result:
        sel = conf.selector()
        with enter_netns(args.netns) as ns:
            dev = host.find_device(sel)
            # move_in undoes itself when it fails; from here on the device is ours to return.
            moved = host.move_in(dev, ns, args.ifname)
            record = _record(args, dev)
            rollback.push(f"return {dev.name!r} to the host", _return_device, args, conf,
                          record)
            try:
                _store(conf).save(args.container_id, args.ifname, record)
            except OSError as exc:
                raise IOFailure(f"failed to write {exc.filename}: {exc.strerror}") from exc
            result = Result(interfaces=[Interface(name=moved.name, mac=moved.mac,
                                                  sandbox=args.netns, pci_id=sel.pci)])
            if conf.ipam_type:
                ipam_into(args, conf.ipam_type, result, rollback)
                ns.call(host.configure_iface, args.ifname, result)
        apply_dns(args, result)
        return result

    def delete(self, args: CmdArgs) -> None:
        conf = HostDeviceConfig.load_for_teardown(args)
        if not conf.dpdk(strict=False):
            _return_device(args, conf)
        if conf.ipam_type:
            ipam_del(args, conf.ipam_type)

    def check(self, args: CmdArgs) -> None:
        conf = HostDeviceConfig.load(args)
        if conf.ipam_type:
            ipam_check(args, conf.ipam_type)
        result = prev_result(args)
        if conf.dpdk(strict=True):
            return
        with enter_netns(args.netns) as ns:
            check_container(args, ns, result, kind=None)

    def status(self, args: CmdArgs) -> None:
        conf = HostDeviceConfig.load(args)
        if conf.ipam_type:
            ipam_status(args, conf.ipam_type)

    def gc(self, args: CmdArgs) -> None:
        """IPAM GC, then drop this network's records of attachments that are gone."""
        conf = HostDeviceConfig.load_for_teardown(args)
        gc_attachments(args, conf.ipam_type, masquerade=False)
        valid = valid_attachments(args.conf.raw)
        store = _store(conf)
        for path in store.records():
            saved = RecordStore.load(path)
            if saved is None or saved.get("network") != args.conf.name:
                continue
            if (saved.get("containerID"), saved.get("ifname")) not in valid:
                RecordStore.remove(path)


main = HostDevice.main
