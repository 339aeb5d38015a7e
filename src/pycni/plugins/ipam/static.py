"""static: return fixed addresses, routes and DNS settings; nothing is stored.

Example config (the IPAM section of a main plugin's config)::

    {
      "cniVersion": "1.1.0", "name": "mynet", "type": "macvlan", "master": "eth0",
      "ipam": {
        "type": "static",
        "addresses": [
          {"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
          {"address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
        "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}
      }
    }

Addresses come, in the reference plugin's order of precedence, from:

1. ``ipam.addresses``, plus CNI_ARGS ``IP`` (comma-separated CIDRs) appended to them;
   CNI_ARGS ``GATEWAY`` (comma-separated IPs) sets the gateway of each CNI_ARGS address
   whose subnet holds it;
2. ``args.cni.ips`` (CIDR strings), which replaces all of the above;
3. ``runtimeConfig.ips`` (the ``ips`` capability), which replaces all of the above.

ADD returns them with ``routes`` and ``dns``. DEL has nothing to release. CHECK verifies
that ``prevResult`` carries every configured address (and its gateway, when configured).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...ipam import IPAddress, parse_address, parse_interface, parse_routes
from ...skel import CmdArgs, Plugin
from ...spec import (
    DNS,
    DecodingFailure,
    InvalidNetworkConfig,
    IPConfig,
    IPInterface,
    NetworkConfig,
    Result,
    Route,
    UnknownContainer,
    parse_version,
)

#: CNI_ARGS keys static reads (with IgnoreUnknown semantics for the others).
CNI_ARGS_KEYS = ("IP", "GATEWAY")


def _parse_cidr(value: Any, field: str) -> IPInterface:
    iface = parse_interface(value, field,
                            expected="an address with prefix length such as 10.1.0.5/24")
    if isinstance(iface, ipaddress.IPv6Interface) and iface.ip.ipv4_mapped is not None:
        return ipaddress.IPv4Interface(f"{iface.ip.ipv4_mapped}/{iface.network.prefixlen - 96}")
    return iface


@dataclass(frozen=True)
class StaticAddress:
    """One configured address (host bits kept) and its optional gateway."""

    address: IPInterface
    gateway: IPAddress | None = None
    #: The field it came from, for messages.
    source: str = ""

    @classmethod
    def from_json(cls, obj: Any, field: str) -> StaticAddress:
        """``{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}``."""
        if not isinstance(obj, dict):
            raise InvalidNetworkConfig(f'invalid "{field}": expected an object with "address"')
        address = _parse_cidr(obj.get("address"), f"{field}.address")
        gateway = None
        if obj.get("gateway") not in (None, ""):
            gateway = parse_address(obj["gateway"], f"{field}.gateway")
        return cls(address, gateway, field)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",")]


@dataclass(frozen=True)
class StaticConfig:
    """static's view of the config."""

    addresses: tuple[StaticAddress, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)

    @classmethod
    def load(cls, conf: NetworkConfig, cni_args: Mapping[str, str]) -> StaticConfig:
        """Validate ``conf.ipam`` and apply the overrides; errors name the field."""
        if conf.ipam is None:
            raise InvalidNetworkConfig('IPAM config missing: "ipam" is required for static')
        ipam = conf.ipam
        if ipam.get("type") != "static":
            raise InvalidNetworkConfig(f'invalid "ipam.type" {ipam.get("type")!r}: the static '
                                       'plugin reads an "ipam" with "type": "static"')
        raw_addresses = ipam.get("addresses")
        if raw_addresses is None:
            raw_addresses = []
        if not isinstance(raw_addresses, list):
            raise InvalidNetworkConfig('invalid "ipam.addresses": expected a list of '
                                       '{"address", "gateway"} objects')
        addresses = [StaticAddress.from_json(a, f"ipam.addresses[{i}]")
                     for i, a in enumerate(raw_addresses)]
        from_env = [StaticAddress(_parse_cidr(item, "CNI_ARGS IP"), None, "CNI_ARGS IP")
                    for item in _split(cni_args["IP"])] if cni_args.get("IP") else []
        if cni_args.get("GATEWAY"):
            # As in the reference, GATEWAY pairs with CNI_ARGS IP: configured addresses keep
            # their own gateway.
            for item in _split(cni_args["GATEWAY"]):
                gw = parse_address(item, "CNI_ARGS GATEWAY")
                from_env = [StaticAddress(a.address, gw, a.source)
                            if gw.version == a.address.version and gw in a.address.network
                            else a for a in from_env]
        addresses += from_env
        for source, value in (("args.cni.ips", conf.cni_args().get("ips")),
                              ("runtimeConfig.ips", conf.runtime_config.get("ips"))):
            if not value:
                continue
            if not isinstance(value, list):
                raise InvalidNetworkConfig(f'invalid "{source}": expected a list of CIDR strings')
            addresses = [StaticAddress(_parse_cidr(item, f"{source}[{i}]"), None,
                                       f"{source}[{i}]") for i, item in enumerate(value)]
        for a in addresses:
            if a.gateway is not None and a.gateway.version != a.address.version:
                raise InvalidNetworkConfig(f'invalid "{a.source}.gateway" {a.gateway}: the '
                                           f"address {a.address} is IPv{a.address.version}")
        if parse_version(conf.cni_version) < (0, 3, 0):
            for family in (4, 6):
                if sum(1 for a in addresses if a.address.version == family) > 1:
                    raise InvalidNetworkConfig(
                        f'invalid "ipam.addresses": cniVersion {conf.cni_version} allows one '
                        f"address per family, got several IPv{family} addresses"
                    )
        try:
            dns = DNS.from_json(ipam.get("dns"))
        except DecodingFailure as exc:
            raise InvalidNetworkConfig(f'invalid "ipam.dns": {exc.msg}') from exc
        return cls(tuple(addresses), parse_routes(ipam.get("routes"), "ipam.routes"), dns)


class Static(Plugin):
    """The ``static`` IPAM plugin."""

    type_name = "static"

    @staticmethod
    def _config(args: CmdArgs) -> StaticConfig:
        return StaticConfig.load(args.conf, args.cni_args(CNI_ARGS_KEYS))

    def add(self, args: CmdArgs) -> Result:
        cfg = self._config(args)
        return Result(
            ips=[IPConfig(address=a.address, gateway=a.gateway) for a in cfg.addresses],
            routes=list(cfg.routes),
            dns=DNS(list(cfg.dns.nameservers), cfg.dns.domain, list(cfg.dns.search),
                    list(cfg.dns.options)),
        )

    def delete(self, args: CmdArgs) -> None:  # noqa: ARG002 - nothing to look up
        """Nothing was allocated, so there is nothing to release (even for a bad config)."""
        return

    def check(self, args: CmdArgs) -> None:
        cfg = self._config(args)
        prev = args.conf.prev_result
        if prev is None:
            raise InvalidNetworkConfig('static CHECK needs "prevResult"')
        for a in cfg.addresses:
            match = next((ip for ip in prev.ips if ip.address.ip == a.address.ip), None)
            if match is None:
                raise UnknownContainer(f"static: address {a.address} ({a.source}) is not in "
                                       f"prevResult for interface {args.ifname!r}")
            if a.gateway is not None and match.gateway != a.gateway:
                raise UnknownContainer(f"static: address {a.address} has gateway "
                                       f"{match.gateway} in prevResult, config wants {a.gateway}")


main = Static.main
