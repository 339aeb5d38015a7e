"""The pod annotations that select networks (the NPWG multi-net spec, section 4).

``k8s.v1.cni.cncf.io/networks`` takes two forms::

    macvlan-conf, other-ns/sriov@ens1            # short: [namespace/]name[@interface]
    [{"name": "macvlan-conf", "ips": ["10.1.1.5/24"], "mac": "02:00:00:00:00:01",
      "interface": "data0", "default-route": ["10.1.1.1"]}]           # JSON

``v1.multus-cni.io/default-network`` replaces the cluster network with one NAD
(``[namespace/]name``, or the JSON form of one selection).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .._json import loads
from ..spec import InvalidNetworkConfig, ifname_problem

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NETWORK_ANNOTATION = "v1.multus-cni.io/default-network"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
RESOURCE_NAME_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName"

#: Kubernetes object names (DNS-1123 subdomain) and namespaces (DNS-1123 label).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")
#: An InfiniBand GUID: eight bytes, colon-separated.
_GUID = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){7}\Z")

#: JSON key -> the runtimeConfig capability the delegate gets it as.
CAPABILITY_KEYS = {"ips": "ips", "mac": "mac", "portMappings": "portMappings",
                   "bandwidth": "bandwidth", "infiniband-guid": "infinibandGUID",
                   "deviceID": "deviceID"}


@dataclass(frozen=True)
class NetworkSelection:
    """One network a pod asks for."""

    name: str
    namespace: str
    interface: str = ""
    #: runtimeConfig for this attachment's delegates only (``ips``, ``mac``, ...).
    capability_args: dict[str, Any] = field(default_factory=dict)
    cni_args: dict[str, Any] = field(default_factory=dict)
    default_route: tuple[str, ...] = ()
    ipam_claim_reference: str = ""

    @property
    def key(self) -> str:
        """``namespace/name``, as network-status names it."""
        return f"{self.namespace}/{self.name}"


def _bad(where: str, expected: str, got: Any) -> InvalidNetworkConfig:
    text = got if isinstance(got, str) else json.dumps(got)
    return InvalidNetworkConfig(f"invalid {where}: expected {expected}, got {text[:200]!r}")


def _check_name(value: str, where: str, *, namespace: bool = False) -> str:
    pattern = _LABEL if namespace else _SUBDOMAIN
    limit = 63 if namespace else 253
    if not pattern.match(value) or len(value) > limit:
        kind = "a namespace (DNS-1123 label)" if namespace else "a NAD name (DNS-1123 subdomain)"
        raise _bad(where, kind, value)
    return value


def _check_ifname(value: Any, where: str) -> str:
    if not isinstance(value, str) or ifname_problem(value) is not None:
        raise _bad(where, "an interface name of 1-15 bytes without '/', ':' or spaces", value)
    return value


def _short(item: str, pod_namespace: str, where: str) -> NetworkSelection:
    text = item.strip()
    name_part, at, ifname = text.partition("@")
    if at and ("@" in ifname):
        raise _bad(where, "[namespace/]name[@interface]", text)
    namespace, slash, name = name_part.rpartition("/")
    if slash and not namespace:
        raise _bad(where, "[namespace/]name[@interface]", text)
    if "/" in namespace:
        raise _bad(where, "[namespace/]name[@interface]", text)
    return NetworkSelection(
        name=_check_name(name, where),
        namespace=_check_name(namespace, where, namespace=True) if slash else pod_namespace,
        interface=_check_ifname(ifname, where) if at else "")


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise _bad(f'{where} "{key}"', "a string", value)
    return value


def _address_list(value: Any, where: str, *, prefix: bool) -> list[str]:
    if not isinstance(value, list):
        raise _bad(where, "a list of IP addresses", value)
    expected = "a list of IP addresses" + (" (with an optional /prefix)" if prefix else "")
    for item in value:
        if not isinstance(item, str):
            raise _bad(where, expected, value)
        try:
            if prefix and "/" in item:
                ipaddress.ip_interface(item)
            else:
                ipaddress.ip_address(item)
        except ValueError:
            raise _bad(where, expected, value) from None
    return list(value)


def _json_item(obj: Any, pod_namespace: str, where: str) -> NetworkSelection:
    if not isinstance(obj, dict):
        raise _bad(where, "an object with at least \"name\"", obj)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f'{where} "name"', "the NAD's name", obj.get("name"))
    namespace = _string(obj, "namespace", where) or pod_namespace
    interface = obj.get("interface", "")
    caps: dict[str, Any] = {}
    if "ips" in obj:
        caps["ips"] = _address_list(obj["ips"], f'{where} "ips"', prefix=True)
    if "mac" in obj:
        mac = obj["mac"]
        if not isinstance(mac, str) or not _MAC.match(mac):
            raise _bad(f'{where} "mac"', "a MAC address like 02:00:00:00:00:01", mac)
        caps["mac"] = mac
    if "portMappings" in obj:
        ports = obj["portMappings"]
        if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
            raise _bad(f'{where} "portMappings"', "a list of port mapping objects", ports)
        caps["portMappings"] = ports
    if "bandwidth" in obj:
        if not isinstance(obj["bandwidth"], dict):
            raise _bad(f'{where} "bandwidth"', "an object", obj["bandwidth"])
        caps["bandwidth"] = obj["bandwidth"]
    if "infiniband-guid" in obj:
        guid = obj["infiniband-guid"]
        if not isinstance(guid, str) or not _GUID.match(guid):
            raise _bad(f'{where} "infiniband-guid"', "a GUID like 00:11:22:33:44:55:66:77",
                       guid)
        caps["infinibandGUID"] = guid
    if "deviceID" in obj:
        device = obj["deviceID"]
        if not isinstance(device, str) or not device:
            raise _bad(f'{where} "deviceID"', "a device ID string", device)
        caps["deviceID"] = device
    cni_args = obj.get("cni-args", {})
    if not isinstance(cni_args, dict):
        raise _bad(f'{where} "cni-args"', "an object", cni_args)
    routes = _address_list(obj.get("default-route", []), f'{where} "default-route"',
                           prefix=False)
    return NetworkSelection(
        name=_check_name(name, f'{where} "name"'),
        namespace=_check_name(namespace, f'{where} "namespace"', namespace=True),
        interface=_check_ifname(interface, f'{where} "interface"') if interface else "",
        capability_args=caps,
        cni_args=dict(cni_args),
        default_route=tuple(routes),
        ipam_claim_reference=_string(obj, "ipam-claim-reference", where),
    )


def parse_networks(text: str, pod_namespace: str,
                   where: str = f"annotation {NETWORKS_ANNOTATION!r}") -> list[NetworkSelection]:
    """The selections in a networks annotation, either form; InvalidNetworkConfig names the
    annotation and the entry. Unknown JSON keys are ignored (the spec lets new keys
    appear); an empty annotation selects nothing."""
    text = text.strip()
    if not text:
        return []
    if text.startswith(("[", "{")):
        try:
            data = loads(text)
        except ValueError as exc:
            raise InvalidNetworkConfig(f"invalid {where}: expected a JSON list of network "
                                       f"selections, got {text[:200]!r}", str(exc)) from exc
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise _bad(where, "a JSON list of network selections", data)
        return [_json_item(obj, pod_namespace, f"{where}[{i}]") for i, obj in enumerate(data)]
    return [_short(item, pod_namespace, f"{where} entry {i}")
            for i, item in enumerate(text.split(","))]


def parse_default_network(text: str, pod_namespace: str) -> NetworkSelection:
    """The NAD a ``v1.multus-cni.io/default-network`` annotation names."""
    where = f"annotation {DEFAULT_NETWORK_ANNOTATION!r}"
    found = parse_networks(text, pod_namespace, where)
    if len(found) != 1:
        raise _bad(where, "exactly one network", text)
    return found[0]
