"""Telling a segment that an address now lives at a MAC: gratuitous ARP for IPv4, an
unsolicited neighbour advertisement for IPv6.

A gratuitous ARP is sent after a new link gets its addresses (macvlan, ipvlan: the MAC is
new to the switches and the address may have belonged to another MAC a moment ago) and after
tuning changes a MAC; for IPv6 those rely on the kernel's ``ndisc_notify``, as the reference
plugins do. A live switch of a pod's network (pycni.multi) sends both explicitly. Best
effort: the attachment works without them.
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

    IPv6 addresses are skipped (:func:`send_unsolicited_na` announces those); failures are
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
    explicit ARP tells the segment's switches and neighbours at once. IPv6 addresses get no
    explicit advertisement here, as in the reference plugins (they may still be tentative).
    """
    sysctl_try_set(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    sysctl_try_set(f"net/ipv6/conf/{ifname}/ndisc_notify", "1")
    send_gratuitous_arp(ifname, addresses)


#: RFC 4861 4.4: neighbour advertisement, its Override flag, the target link-layer option.
ICMPV6_NA = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LLADDR = 2


def na_message(mac: str, address: ipaddress.IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement (ICMPv6, checksum left to the kernel) saying
    ``address`` is at ``mac``, with Override set so neighbours replace what they cached."""
    hw = bytes.fromhex(mac.replace(":", ""))
    return (struct.pack("!BBHI", ICMPV6_NA, 0, 0, NA_FLAG_OVERRIDE) + address.packed
            + struct.pack("!BB", ND_OPT_TARGET_LLADDR, 1) + hw)


def send_unsolicited_na(ifname: str, addresses: Iterable[IPAddress]) -> None:
    """The IPv6 counterpart of :func:`send_gratuitous_arp`: one unsolicited neighbour
    advertisement per IPv6 address to all nodes (ff02::1) from ``ifname``'s MAC.

    Neighbours update a cached entry for the address to that MAC at once; without it an
    entry for a MAC that left (a live switch) is probed by unicast until it fails, seconds
    later. The kernel sends such notices itself only on its own address and link changes
    (``ndisc_notify``), never for a proxied address. Best effort: failures are ignored.
    """
    v6 = [ip for ip in addresses if isinstance(ip, ipaddress.IPv6Address)]
    if not v6:
        return
    info = link_info(ifname)
    if info is None or not info.mac:
        return
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    except OSError:
        return
    try:
        # RFC 4861 7.1.2: receivers drop neighbour discovery with a hop limit below 255.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        for ip in v6:
            sock.sendto(na_message(info.mac, ip), ("ff02::1", 0, 0, info.index))
    except OSError:
        pass
    finally:
        sock.close()
