"""The dhcp IPAM section, and the DHCP options an attachment sends and asks for.

Example (the IPAM section of a main plugin's config)::

    "ipam": {
      "type": "dhcp",
      "daemonSocketPath": "/run/cni/dhcp.sock",
      "request": [{"skipDefault": false, "option": "classless-static-routes"}],
      "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"},
                  {"option": "user-class", "value": "pods"}],
      "priority": 100
    }

``request`` adds codes to the parameter request list (option 55); one entry with
``skipDefault`` drops the default list. ``provide`` sends options with a literal ``value`` or a
value taken from CNI_ARGS (``fromArg``), the latter winning. An option is a number (0-255)
or a name from dhcp-options(5). ``priority`` is the metric of the returned routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...spec import InvalidNetworkConfig, NetworkConfig, bool_field, int_field, str_default
from . import _packet as p

#: Where the plugin finds the daemon unless ``ipam.daemonSocketPath`` says otherwise.
DEFAULT_SOCKET_PATH = "/run/cni/dhcp.sock"

#: dhcp-options(5) names accepted for ``request``/``provide`` (the reference's six and the
#: ones whose values this client reads).
OPTION_NAMES: dict[str, int] = {
    "subnet-mask": p.OPT_SUBNET_MASK,
    "routers": p.OPT_ROUTER,
    "domain-name-servers": p.OPT_DNS,
    "host-name": p.OPT_HOST_NAME,
    "domain-name": p.OPT_DOMAIN_NAME,
    "interface-mtu": 26,
    "broadcast-address": 28,
    "static-routes": p.OPT_STATIC_ROUTES,
    "ntp-servers": 42,
    "vendor-class-identifier": p.OPT_VENDOR_CLASS,
    "dhcp-client-identifier": p.OPT_CLIENT_ID,
    "user-class": p.OPT_USER_CLASS,
    "domain-search": p.OPT_DOMAIN_SEARCH,
    "classless-static-routes": p.OPT_CLASSLESS_ROUTES,
}

#: Asked for unless an entry of ``request`` has ``skipDefault``: the reference asks for the
#: mask and routers; we also ask for what the result can carry (routes and DNS), since
#: servers such as dnsmasq send only the options a client asks for.
DEFAULT_REQUEST: tuple[int, ...] = (
    p.OPT_SUBNET_MASK, p.OPT_ROUTER, p.OPT_DNS, p.OPT_DOMAIN_NAME, p.OPT_STATIC_ROUTES,
    p.OPT_DOMAIN_SEARCH, p.OPT_CLASSLESS_ROUTES,
)

#: Options the client itself manages: a ``provide`` entry may not set them.
_RESERVED = frozenset({p.OPT_PAD, p.OPT_END, p.OPT_MESSAGE_TYPE, p.OPT_PARAMETER_LIST,
                       p.OPT_REQUESTED_IP, p.OPT_SERVER_ID, p.OPT_LEASE_TIME, p.OPT_MAX_SIZE})


def parse_option(value: Any, where: str) -> int:
    """An option given as a code (number or numeric string) or a dhcp-options(5) name."""
    if isinstance(value, bool):
        raise InvalidNetworkConfig(f'invalid "{where}": expected an option name or code, got '
                                   f"{value!r}")
    if isinstance(value, int):
        code = value
    elif isinstance(value, str) and value.strip().isdigit():
        code = int(value.strip())
    elif isinstance(value, str) and value in OPTION_NAMES:
        return OPTION_NAMES[value]
    else:
        known = ", ".join(sorted(OPTION_NAMES))
        raise InvalidNetworkConfig(f'invalid "{where}": unknown DHCP option {value!r}',
                                   f"use a code 1-254 or one of: {known}")
    if not 1 <= code <= 254:
        raise InvalidNetworkConfig(f'invalid "{where}": DHCP option code {code} is out of '
                                   "range 1-254")
    return code


@dataclass(frozen=True)
class DhcpIpamConfig:
    """What the dhcp IPAM section says; per-attachment values are resolved by :meth:`options`."""

    socket_path: str = DEFAULT_SOCKET_PATH
    request: tuple[int, ...] = DEFAULT_REQUEST
    #: (code, literal value or None, CNI_ARGS key or "") per ``provide`` entry.
    provide: tuple[tuple[int, bytes | None, str], ...] = ()
    priority: int = 0

    @classmethod
    def load(cls, conf: NetworkConfig) -> DhcpIpamConfig:
        """Validate ``conf.ipam``; errors name the field."""
        ipam = conf.ipam or {}
        socket_path = str_default(ipam, "daemonSocketPath", DEFAULT_SOCKET_PATH, what="ipam.")
        priority = int_field(ipam, "priority", what="ipam.") or 0  # the routes' metric
        return cls(str(Path(socket_path).absolute()), _request(ipam.get("request")),
                   _provide(ipam.get("provide")), priority)

    def options(self, cni_args: Mapping[str, str]) -> dict[int, bytes]:
        """The options every message of this attachment carries: the provided ones and the
        parameter request list."""
        out: dict[int, bytes] = {}
        for code, literal, from_arg in self.provide:
            value = literal
            if from_arg and from_arg in cni_args:
                value = cni_args[from_arg].encode()
                if len(value) > 255:
                    raise InvalidNetworkConfig(
                        f"value of CNI_ARGS {from_arg!r} is too long for DHCP option {code}",
                        f"at most 255 bytes, got {len(value)}")
            if value:
                out[code] = value
        if self.request:
            out[p.OPT_PARAMETER_LIST] = bytes(self.request)
        return out


def _entries(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise InvalidNetworkConfig(f'invalid "{where}": expected a list of objects')
    return value


def _request(value: Any) -> tuple[int, ...]:
    codes: list[int] = []
    skip_default = False
    for i, entry in enumerate(_entries(value, "ipam.request")):
        skip_default = bool_field(entry, "skipDefault", what=f"ipam.request[{i}].") or skip_default
        if entry.get("option") in (None, ""):
            continue
        code = parse_option(entry["option"], f"ipam.request[{i}].option")
        if code not in codes:
            codes.append(code)
    if not skip_default:
        codes += [c for c in DEFAULT_REQUEST if c not in codes]
    return tuple(codes)


def _provide(value: Any) -> tuple[tuple[int, bytes | None, str], ...]:
    out: list[tuple[int, bytes | None, str]] = []
    for i, entry in enumerate(_entries(value, "ipam.provide")):
        where = f"ipam.provide[{i}]"
        code = parse_option(entry.get("option"), f"{where}.option")
        if code in _RESERVED:
            raise InvalidNetworkConfig(f'invalid "{where}.option": DHCP option {code} is set '
                                       "by the client itself")
        literal = entry.get("value")
        if literal is not None and not isinstance(literal, str):
            raise InvalidNetworkConfig(f'invalid "{where}.value": expected a string')
        from_arg = entry.get("fromArg") or ""
        if not isinstance(from_arg, str):
            raise InvalidNetworkConfig(f'invalid "{where}.fromArg": expected a CNI_ARGS key')
        raw = literal.encode() if literal else None
        if raw is not None and len(raw) > 255:
            raise InvalidNetworkConfig(f'invalid "{where}.value": too long for a DHCP option',
                                       f"at most 255 bytes, got {len(raw)}")
        out.append((code, raw, from_arg))
    return tuple(out)


def client_id(container_id: str, network: str, ifname: str) -> str:
    """The attachment's DHCP client identifier, as the reference forms it:
    ``containerID/network/ifname``, cut to 254 bytes (option 61 holds 255 with its type)."""
    return (container_id + "/" + network + "/" + ifname).encode()[:254].decode(errors="ignore")
