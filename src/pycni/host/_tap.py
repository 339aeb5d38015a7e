"""Persistent tap devices, made through ``/dev/net/tun`` in the calling thread's namespace.

The kernel refuses to create tun/tap links over rtnetlink ("use the ioctl"), so a tap is
made the way ``ip tuntap add`` makes one: open ``/dev/net/tun``, ``TUNSETIFF`` with the name
and flags, optionally ``TUNSETOWNER``/``TUNSETGROUP``, then ``TUNSETPERSIST`` so the device
outlives the file descriptor. The device appears in the namespace of the task that opened
``/dev/net/tun``, which after ``setns`` is the worker thread's: the container's.

``IFF_TUN_EXCL`` makes ``TUNSETIFF`` fail with EBUSY when the name is taken, instead of
attaching to an existing tap of that name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from pathlib import Path

from ..spec import InvalidNetworkConfig, KernelError
from .links import index_of, kernel_op, rtnl

TUN_DEVICE = "/dev/net/tun"

# <linux/if_tun.h>: _IOW('T', n, int)
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE

IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000

#: SELinux is enabled when selinuxfs is mounted.
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"


def tap_flags(*, multi_queue: bool) -> int:
    """TUNSETIFF flags: a tap without packet info, with a virtio-net header, exclusive.

    ``IFF_VNET_HDR`` is what the reference sets when it creates the tap over netlink; a
    process that attaches later chooses its own header and offload flags anyway.
    """
    flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL
    return flags | IFF_MULTI_QUEUE if multi_queue else flags


def create_tap(ifname: str, *, multi_queue: bool = False, owner: int | None = None,
               group: int | None = None) -> None:
    """Create persistent tap ``ifname`` here; KernelError if the name is taken."""
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelError(f"cannot open {TUN_DEVICE} to create tap {ifname!r}: "
                          f"{exc.strerror}") from exc
    try:
        ifr = struct.pack("16sH22x", ifname.encode(), tap_flags(multi_queue=multi_queue))
        try:
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise KernelError(f"cannot create tap {ifname!r}: the container already has "
                                  f"a link named {ifname!r}") from exc
            raise KernelError(f"failed to create tap {ifname!r}: {exc.strerror}") from exc
        # From here the device exists but is not yet persistent: closing fd removes it,
        # so a failure below leaves nothing behind.
        for what, request, value in (("owner", TUNSETOWNER, owner),
                                     ("group", TUNSETGROUP, group)):
            if value is not None:
                try:
                    fcntl.ioctl(fd, request, value)
                except OSError as exc:
                    raise KernelError(f"failed to set the {what} of tap {ifname!r} to "
                                      f"{value}: {exc.strerror}") from exc
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        except OSError as exc:
            raise KernelError(f"failed to make tap {ifname!r} persistent: "
                              f"{exc.strerror}") from exc
    finally:
        os.close(fd)


def selinux_enabled() -> bool:
    """True if SELinux is enabled on this host."""
    return Path(SELINUX_ENFORCE).exists()


def create_tap_labelled(ifname: str, context: str, *, multi_queue: bool = False,
                        owner: int | None = None, group: int | None = None) -> None:
    """Create the tap with SELinux context ``context`` (as the reference does).

    A tun device takes the security context of the task that creates it, so this sets the
    thread's exec context and runs ``ip tuntap add``, which then creates it under that
    context; the thread's exec context is cleared again afterwards.
    """
    if not selinux_enabled():
        raise InvalidNetworkConfig(f'"selinuxContext" {context!r} is set but SELinux is not '
                                   "enabled on this host")
    with rtnl() as ipr:
        if index_of(ipr, ifname) is not None:
            raise KernelError(f"cannot create tap {ifname!r}: the container already has a "
                              f"link named {ifname!r}")
    argv = ["ip", "tuntap", "add", "mode", "tap", "name", ifname, "vnet_hdr"]
    if multi_queue:
        argv.append("multi_queue")
    if owner is not None:
        argv += ["user", str(owner)]
    if group is not None:
        argv += ["group", str(group)]
    attr = "/proc/thread-self/attr/exec"
    try:
        Path(attr).write_text(context)
    except OSError as exc:
        raise KernelError(f"failed to set SELinux exec context {context!r}: "
                          f"{exc.strerror}") from exc
    try:
        # fork() copies this thread's credentials (with the exec context) and namespace.
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        Path(attr).write_text("")
    if proc.returncode != 0:
        raise KernelError(f"failed to create tap {ifname!r} with SELinux context {context!r}: "
                          f"{proc.stderr.strip()}")


def configure_tap(ifname: str, *, mtu: int = 0, mac: str = "", bridge: str = "") -> None:
    """Set the MTU and MAC of ``ifname``, enslave it to ``bridge`` (here), and set it up."""
    with rtnl() as ipr:
        idx = index_of(ipr, ifname)
        if idx is None:
            raise KernelError(f"link {ifname!r} not found")
        if mtu:
            with kernel_op(f"failed to set MTU {mtu} on tap {ifname!r}"):
                ipr.link("set", index=idx, mtu=mtu)
        if mac:
            with kernel_op(f"failed to set MAC {mac} on tap {ifname!r}"):
                ipr.link("set", index=idx, address=mac)
        if bridge:
            br = index_of(ipr, bridge)
            if br is None:
                raise KernelError(f"failed to attach tap {ifname!r}: bridge {bridge!r} not "
                                  "found in the container namespace")
            info = ipr.link("get", index=br)[0].get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info is not None else None
            if kind != "bridge":
                raise KernelError(f"failed to attach tap {ifname!r}: {bridge!r} is not a bridge "
                                  f"(it is a {kind or 'plain link'})")
            with kernel_op(f"failed to set tap {ifname!r} as a port of bridge {bridge!r}"):
                ipr.link("set", index=idx, master=br)
        with kernel_op(f"failed to set tap {ifname!r} up"):
            ipr.link("set", index=idx, state="up")
