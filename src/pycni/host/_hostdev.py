"""Moving an existing host device into a container and back (the host-device plugin).

Finding the device. Names and MACs come from netlink, in the calling thread's namespace.
Paths (``kernelpath``, a PCI or auxiliary device) need sysfs, and sysfs only shows the net
devices of the namespace that *mounted* it: a plugin running in a namespace other than the
one ``/sys`` was mounted in would read the other namespace's device names. So a path is
resolved the other way round: every link here reports its parent device over netlink
(``IFLA_PARENT_DEV_BUS_NAME``/``IFLA_PARENT_DEV_NAME``), ``/sys/bus/<bus>/devices/<dev>``
(which is not namespace-filtered) gives that parent's sysfs path, and the link whose parent
is the wanted device wins. Only on a kernel without those attributes do we read
``<device>/net/``, and then only when sysfs demonstrably shows this namespace.

Moving it. Like the reference plugin, the device goes through a private scratch namespace:
it is renamed to ``CNI_IFNAME`` there (no clash with host names, no rename storm for udev or
NetworkManager on the host) and its original name is kept in the link's alias
(``IFLA_IFALIAS``), which is what the reference reads back on DEL, so either implementation
can return a device the other moved. Every step has an undo that runs if a later one fails.
Moving a device between namespaces sets it down and flushes its addresses.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..spec import InvalidNetworkConfig, KernelError
from ._netns import NetNS, _setns, enter, open_netns, unshare_netns
from ._undo import Undo
from ._veth import current_netns_fd
from .links import (
    LinkInfo,
    index_of,
    kernel_op,
    link_info,
    list_links,
    rtnl,
    set_alias,
    set_link_up,
)

#: Where sysfs lives; tests point this at a fake tree.
SYSFS = "/sys"

#: Drivers that bind a NIC for userspace (DPDK): such a device has no netdev to move.
USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")


def _require_link(ifname: str) -> LinkInfo:
    link = link_info(ifname)
    if link is None:
        raise KernelError(f"link {ifname!r} not found")
    return link


def _links_by_name() -> list[LinkInfo]:
    """Every link here, by name (the order in which a MAC or device path is matched)."""
    return sorted(list_links(), key=lambda link: link.name)


# --- finding the device --------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """Which device to take; the first non-empty field wins, in field order (as upstream)."""

    device: str = ""
    hwaddr: str = ""
    kernelpath: str = ""
    pci: str = ""
    aux: str = ""

    def describe(self) -> str:
        """``device "eth1"``, ``PCI device 0000:3d:00.1``... for messages."""
        for label, value in (("device", self.device), ("hwaddr", self.hwaddr),
                             ("kernelpath", self.kernelpath), ("PCI device", self.pci),
                             ("auxiliary device", self.aux)):
            if value:
                return f"{label} {value!r}"
        return "no device"


def _real(path: Path) -> Path | None:
    try:
        return path.resolve(strict=True)
    except OSError:
        return None


def _parent_path(link: LinkInfo) -> Path | None:
    """The sysfs path of a link's parent device (None for virtual links)."""
    if not link.parent_bus or not link.parent_dev:
        return None
    return _real(Path(SYSFS, "bus", link.parent_bus, "devices", link.parent_dev))


def _sysfs_is_ours(links: list[LinkInfo]) -> bool:
    """True if ``/sys/class/net`` lists exactly this namespace's links (same names, ifindexes)."""
    seen: set[tuple[str, int]] = set()
    try:
        for entry in Path(SYSFS, "class", "net").iterdir():
            seen.add((entry.name, int((entry / "ifindex").read_text())))
    except (OSError, ValueError):
        return False
    return seen == {(link.name, link.index) for link in links}


def _by_device_path(links: list[LinkInfo], targets: list[Path], what: str) -> LinkInfo:
    """The link whose parent device is one of ``targets`` (sysfs paths of devices)."""
    wanted = {p for p in (_real(t) for t in targets) if p is not None}
    for link in links:
        parent = _parent_path(link)
        if parent is not None and parent in wanted:
            return link
    if not any(link.parent_dev for link in links) and _sysfs_is_ours(links):
        # A kernel without IFLA_PARENT_DEV_*: read <device>/net/, which we just checked
        # shows this namespace.
        by_name = {link.name: link for link in links}
        for target in targets:
            try:
                names = sorted(p.name for p in (target / "net").iterdir())
            except OSError:
                continue
            for name in names:
                if name in by_name:
                    return by_name[name]
    raise KernelError(f"failed to find host device: no network device of {what} in this "
                      "network namespace")


def _pci_targets(pci: str) -> list[Path]:
    """The PCI function, and its virtio child (virtio-net hangs its netdev off ``virtioN``)."""
    base = Path(SYSFS, "bus", "pci", "devices", pci)
    return [base, *sorted(base.glob("virtio*"))]


def find_device(sel: Selector) -> LinkInfo:
    """The link ``sel`` names, in this thread's namespace; KernelError if there is none."""
    if sel.device:
        link = link_info(sel.device)
        if link is None:
            raise KernelError(f"failed to find host device {sel.device!r}: no such link in "
                              "this network namespace")
        return link
    links = _links_by_name()
    if sel.hwaddr:
        mac = sel.hwaddr.lower().replace("-", ":")
        for link in links:
            if link.mac == mac:
                return link
        raise KernelError(f"failed to find host device: no link has MAC {sel.hwaddr}")
    if sel.kernelpath:
        check_kernelpath(sel.kernelpath)
        return _by_device_path(links, [Path(sel.kernelpath)], f"kernelpath {sel.kernelpath}")
    if sel.pci:
        if _real(Path(SYSFS, "bus", "pci", "devices", sel.pci)) is None:
            raise KernelError(f"failed to find host device: PCI device {sel.pci} does not "
                              "exist")
        return _by_device_path(links, _pci_targets(sel.pci), f"PCI device {sel.pci}")
    if sel.aux:
        return _by_device_path(links, [Path(SYSFS, "bus", "auxiliary", "devices", sel.aux)],
                               f"auxiliary device {sel.aux}")
    raise InvalidNetworkConfig('specify either "device", "hwaddr", "kernelpath" or "pciBusID"')


def check_kernelpath(path: str) -> None:
    """``kernelpath`` must be absolute and under ``/sys/devices/`` (as upstream requires)."""
    if not path.startswith("/sys/devices/") or ".." in Path(path).parts:
        raise InvalidNetworkConfig(f'invalid "kernelpath" {path!r}: it must be an absolute '
                                   "path under /sys/devices/")


def device_id_kind(device_id: str) -> str:
    """``"pci"`` or ``"aux"`` for a ``runtimeConfig.deviceID``; InvalidNetworkConfig otherwise."""
    if "/" in device_id or device_id in (".", ".."):
        raise InvalidNetworkConfig(f"invalid runtimeConfig deviceID {device_id!r}")
    if Path(SYSFS, "bus", "pci", "devices", device_id).exists():
        return "pci"
    if Path(SYSFS, "bus", "auxiliary", "devices", device_id).exists():
        return "aux"
    raise InvalidNetworkConfig(f"runtimeConfig deviceID {device_id!r} is neither a PCI nor an "
                               "auxiliary device on this host")


def pci_driver(pci: str) -> str | None:
    """The driver bound to PCI device ``pci`` (None if unbound); KernelError if it is absent."""
    base = Path(SYSFS, "bus", "pci", "devices", pci)
    if _real(base) is None:
        raise KernelError(f"PCI device {pci} does not exist")
    driver = _real(base / "driver")
    return driver.name if driver is not None else None


def is_dpdk_bound(pci: str) -> bool:
    """True if ``pci`` is bound to a userspace (DPDK) driver and so has no netdev."""
    return pci_driver(pci) in USERSPACE_DRIVERS


# --- moving it -----------------------------------------------------------------------------


@contextmanager
def scratch_netns() -> Iterator[tuple[NetNS, int]]:
    """A new anonymous network namespace: a worker in it and an fd for moving links there.

    It dies when the block ends. A physical device still inside would then go back to the
    initial namespace (not to the host-device plugin's), and a virtual one would be
    destroyed, so callers move everything out before leaving.
    """
    box: list[int | BaseException] = []

    def make() -> None:
        try:
            origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                unshare_netns()
                box.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
            finally:
                _setns(origin)
                os.close(origin)
        except BaseException as exc:  # handed to the caller
            box.append(exc)

    # A thread of its own: unshare() moves the calling thread, which then goes back home
    # and ends; the fd keeps the namespace alive.
    worker = threading.Thread(target=make, name="scratch-netns", daemon=True)
    worker.start()
    worker.join()
    made = box[0]
    if isinstance(made, BaseException):
        raise KernelError(f"failed to create a scratch network namespace: {made}") from made
    try:
        with enter(f"/proc/self/fd/{made}") as ns:
            yield ns, made
    finally:
        os.close(made)


def _set_netns(ifname: str, fd: int) -> None:
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            raise KernelError(f"link {ifname!r} not found")
        with kernel_op(f"failed to move {ifname!r} to another network namespace"):
            ipr.link("set", index=idx, net_ns_fd=fd)


def _set(link: str, what: str, /, **attrs: Any) -> None:
    with rtnl() as ipr:
        idx = index_of(ipr, link)
        if idx is None:
            raise KernelError(f"link {link!r} not found")
        with kernel_op(f"failed to {what} {link!r}"):
            ipr.link("set", index=idx, **attrs)


def _rename(old: str, new: str) -> None:
    _set(old, f"rename to {new!r}:", ifname=new)


def move_in(dev: LinkInfo, container: NetNS, ifname: str) -> LinkInfo:
    """Move ``dev`` from this thread's namespace into ``container`` as ``ifname``, up.

    Its name goes into its alias (replacing any alias it had: the caller keeps that to
    restore it). On failure every step is undone and the device is back here under its
    name, with its alias and in its original up/down state.
    """
    if container.call(link_info, ifname) is not None:
        raise KernelError(f"cannot move {dev.name!r} into the container as {ifname!r}: the "
                          f"container already has a link {ifname!r}")
    with ExitStack() as stack:
        host_fd = stack.enter_context(current_netns_fd())
        scratch, scratch_fd = stack.enter_context(scratch_netns())
        cont_fd = stack.enter_context(container_fd(container))
        # Inside the stack: the undos need the scratch namespace.
        with Undo() as undo:
            if dev.up:
                undo.push(f"set {dev.name!r} up", set_link_up, dev.name)
            _set_netns(dev.name, scratch_fd)
            undo.push(f"move {dev.name!r} back to the host", scratch.call, _set_netns,
                      dev.name, host_fd)
            scratch.call(_rename, dev.name, ifname)
            undo.push(f"rename {ifname!r} back to {dev.name!r}", scratch.call, _rename, ifname,
                      dev.name)
            scratch.call(set_alias, ifname, dev.name)
            undo.push(f"restore the alias of {dev.name!r}", scratch.call, set_alias, ifname,
                      dev.alias)
            scratch.call(_set_netns, ifname, cont_fd)
            undo.push(f"move {ifname!r} out of the container", container.call, _set_netns,
                      ifname, scratch_fd)
            container.call(set_link_up, ifname)
            moved = container.call(_require_link, ifname)
    return moved


@contextmanager
def container_fd(ns: NetNS) -> Iterator[int]:
    """An fd for the namespace ``ns`` lives in."""
    fd = open_netns(ns.path)
    try:
        yield fd
    finally:
        os.close(fd)


def move_out(container: NetNS, ifname: str) -> str | None:
    """Move ``ifname`` from ``container`` back here under the name in its alias.

    Returns that name, or None when the container has no ``ifname`` (DEL is idempotent).
    The alias is cleared. The device arrives down; the caller restores its state. On
    failure the device stays in the container as ``ifname``, so DEL can be retried.
    """
    link = container.call(link_info, ifname)
    if link is None:
        return None
    original = link.alias
    if not original:
        raise KernelError(f"cannot return {ifname!r} to the host: its alias, which holds its "
                          "original name, is empty")
    if link_info(original) is not None:
        raise KernelError(f"cannot return {ifname!r} to the host as {original!r}: the host "
                          f"already has a link named {original!r}")
    with ExitStack() as stack:
        host_fd = stack.enter_context(current_netns_fd())
        scratch, scratch_fd = stack.enter_context(scratch_netns())
        cont_fd = stack.enter_context(container_fd(container))
        with Undo() as undo:
            if link.up:
                undo.push(f"set {ifname!r} up", container.call, set_link_up, ifname)
            container.call(_set_netns, ifname, scratch_fd)
            undo.push(f"move {ifname!r} back into the container", scratch.call, _set_netns,
                      ifname, cont_fd)
            scratch.call(_rename, ifname, original)
            undo.push(f"rename {original!r} back to {ifname!r}", scratch.call, _rename,
                      original, ifname)
            scratch.call(set_alias, original, "")
            undo.push(f"restore the alias of {ifname!r}", scratch.call, set_alias, original,
                      original)
            scratch.call(_set_netns, original, host_fd)
    return original


def restore_state(ifname: str, *, mtu: int, up: bool, alias: str) -> None:
    """Give a returned device its MTU, alias and up/down state from before ADD."""
    link = _require_link(ifname)
    if mtu and link.mtu != mtu:
        _set(ifname, f"restore MTU {mtu} on", mtu=mtu)
    if alias and link.alias != alias:
        set_alias(ifname, alias)
    if up:
        set_link_up(ifname)
