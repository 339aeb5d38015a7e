"""``k8s.v1.cni.cncf.io/network-status`` entries (the NPWG spec, section 4.1.2).

One entry per attachment, in attachment order::

    {"name": "ns/macvlan-conf", "interface": "net1", "ips": ["10.1.1.5"],
     "mac": "02:00:00:00:00:01", "default": false, "dns": {...}, "gateway": ["10.1.1.1"],
     "device-info": {...}}

``ips`` and ``mac`` are those of the sandbox interface the delegate reported (addresses
without their prefix); ``default`` marks the cluster network; ``gateway`` is set on the
attachment that holds the pod's default route; keys without a value are left out.
"""

from __future__ import annotations

from typing import Any

from ..spec import Result
from ._record import Attachment


def status_entry(attachment: Attachment, *, holds_default_route: bool) -> dict[str, Any]:
    """The network-status entry of one added attachment."""
    entry: dict[str, Any] = {"name": attachment.network, "interface": attachment.interface}
    result = Result.from_json(attachment.result) if attachment.result else None
    if result is not None:
        index = next((i for i, iface in enumerate(result.interfaces)
                      if iface.name == attachment.interface and iface.sandbox), None)
        if index is None:
            index = next((i for i, iface in enumerate(result.interfaces) if iface.sandbox),
                         None)
        ips = [str(ip.address.ip) for ip in result.ips
               if ip.interface is None or ip.interface == index]
        if ips:
            entry["ips"] = ips
        if index is not None and result.interfaces[index].mac:
            entry["mac"] = result.interfaces[index].mac
    entry["default"] = attachment.default
    if result is not None:
        dns = result.dns.to_json()
        if dns:
            entry["dns"] = dns
    gateways: list[str] = []
    if attachment.default_route:
        gateways = list(attachment.default_route)
    elif holds_default_route and result is not None:
        gateways = [str(ip.gateway) for ip in result.ips if ip.gateway is not None]
    if gateways:
        entry["gateway"] = gateways
    if attachment.device_id:
        # The device-info spec's PCI form; a richer entry needs the device plugin's file.
        entry["device-info"] = {"type": "pci", "version": "1.1.0",
                                "pci": {"pci-address": attachment.device_id}}
    return entry


def network_status(attachments: list[Attachment]) -> list[dict[str, Any]]:
    """The annotation's list for a pod's added attachments."""
    someone_asked = any(a.default_route for a in attachments)
    return [status_entry(a, holds_default_route=a.default and not someone_asked)
            for a in attachments]
