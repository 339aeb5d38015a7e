"""Link attributes the tuning plugin changes, and namespaced sysctls.

Runs in the calling thread's namespace (inside ``NetNS.call``). ``/proc/sys/net`` resolves
against the network namespace of the task that opens it, and after ``setns`` that is the
worker thread's, so reading and writing it here touches the container's values.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from ..spec import InvalidNetworkConfig, KernelError
from .links import _require, rtnl

IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200
SYSCTL_NET = "/proc/sys/net/"


@dataclass(frozen=True)
class LinkAttrs:
    """What tuning can change on a link."""

    mac: str
    mtu: int
    promisc: bool
    allmulti: bool
    txqlen: int


def get_attrs(ifname: str) -> LinkAttrs:
    """The current attributes of ``ifname``."""
    with rtnl() as ipr:
        msg = ipr.link("get", index=_require(ipr, ifname))[0]
        flags = int(msg["flags"])
        return LinkAttrs(
            mac=str(msg.get("IFLA_ADDRESS") or ""),
            mtu=int(msg.get("IFLA_MTU") or 0),
            promisc=bool(flags & IFF_PROMISC),
            allmulti=bool(flags & IFF_ALLMULTI),
            txqlen=int(msg.get("IFLA_TXQLEN") or 0),
        )


def set_attrs(ifname: str, *, mac: str | None = None, mtu: int | None = None,
              promisc: bool | None = None, allmulti: bool | None = None,
              txqlen: int | None = None) -> None:
    """Change the given attributes of ``ifname``; each failure names the attribute."""
    with rtnl() as ipr:
        idx = _require(ipr, ifname)
        changes: list[tuple[str, dict[str, Any]]] = []
        if mac is not None:
            changes.append(("MAC address", {"address": mac}))
        if mtu is not None:
            changes.append(("MTU", {"mtu": mtu}))
        if txqlen is not None:
            changes.append(("txQLen", {"txqlen": txqlen}))
        for name, flag, value in (("promiscuous mode", IFF_PROMISC, promisc),
                                  ("all-multicast mode", IFF_ALLMULTI, allmulti)):
            if value is not None:
                changes.append((name, {"flags": flag if value else 0, "change": flag}))
        for name, kwargs in changes:
            try:
                ipr.link("set", index=idx, **kwargs)
            except Exception as exc:
                raise KernelError(f"failed to set {name} of {ifname!r}: {exc}") from exc


def sysctl_path(key: str) -> str:
    """``net.ipv4.ip_forward`` or ``net/ipv4/ip_forward`` -> its /proc path; only ``net.``."""
    rel = key if "/" in key else key.replace(".", "/")
    path = os.path.normpath(f"/proc/sys/{rel}")
    if not path.startswith(SYSCTL_NET):
        raise InvalidNetworkConfig(f"invalid net sysctl key: {key!r}",
                                   "only keys under net. (/proc/sys/net) may be changed")
    return path


def write_sysctl(path: str, value: str) -> None:
    """Write one sysctl in this thread's network namespace."""
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except OSError as exc:
        raise KernelError(f"failed to set sysctl {path} to {value!r}: {exc.strerror}") from exc


def read_sysctl(path: str) -> str:
    """Read one sysctl (trailing newline removed)."""
    try:
        with open(path) as fh:
            return fh.read().rstrip("\n")
    except OSError as exc:
        raise KernelError(f"failed to read sysctl {path}: {exc.strerror}") from exc


def send_gratuitous_arp(ifname: str, address: str) -> None:
    """Announce ``address`` at ``ifname``'s (new) MAC so neighbours update their caches.

    Best effort, as in the reference: a failure here never fails the call.
    """
    ip = ipaddress.ip_address(address)
    if ip.version != 4:
        return
    try:
        mac = bytes.fromhex(get_attrs(ifname).mac.replace(":", ""))
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((ifname, 0))
            frame = (b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
                     + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)  # request, as arping does
                     + mac + ip.packed + b"\x00" * 6 + ip.packed)
            sock.send(frame)
    except (OSError, KernelError, ValueError):
        return
