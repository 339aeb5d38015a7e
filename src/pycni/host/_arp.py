"""Gratuitous ARP: telling a segment that an IPv4 address now lives at a MAC.

Sent after a new link gets its addresses (macvlan, ipvlan: the MAC is new to the switches
and the address may have belonged to another MAC a moment ago) and after tuning changes a
MAC. Best effort, as in the reference plugins: the attachment works without it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable

from ._sysctl import sysctl_try_set
from .links import link_info

ETH_P_ARP = 0x0806

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def garp_frame(mac: str, address: ipaddress.IPv4Address) -> bytes:
    """A broadcast gratuitous ARP request announcing ``address`` at ``mac``.

    Sender and target IP are both ``address``; the target MAC is the broadcast address,
    as the ARP library of the reference plugins sends it.
    """
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = address.packed
    eth = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + ip + b"\xff" * 6 + ip
    return eth + arp


def send_gratuitous_arp(ifname: str, addresses: Iterable[IPAddress]) -> None:
    """One gratuitous ARP per IPv4 address in ``addresses`` from ``ifname``'s MAC.

    IPv6 addresses are skipped (the kernel's ``ndisc_notify`` covers them); failures are
    ignored.
    """
    v4 = [ip for ip in addresses if isinstance(ip, ipaddress.IPv4Address)]
    if not v4:
        return
    info = link_info(ifname)
    if info is None or not info.mac:
        return
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except OSError:
        return
    try:
        sock.bind((ifname, ETH_P_ARP))
        for ip in v4:
            sock.send(garp_frame(info.mac, ip))
    except OSError:
        pass
    finally:
        sock.close()


def announce_addresses(ifname: str, addresses: Iterable[IPAddress]) -> None:
    """Best effort: the kernel's own notices from now on, and a gratuitous ARP now.

    ``arp_notify``/``ndisc_notify`` make the kernel announce on later link changes; the
    explicit ARP tells the segment's switches and neighbours at once.
    """
    sysctl_try_set(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    sysctl_try_set(f"net/ipv6/conf/{ifname}/ndisc_notify", "1")
    send_gratuitous_arp(ifname, addresses)
