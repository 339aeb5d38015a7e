"""CNI results for every spec version, with one in-memory model and conversion.

The model is the newest (1.1.0) result. ``Result.from_json`` reads any version into it and
``Result.to_json(version)`` writes any version out of it, following libcni's rules:

* 0.3.0 - 0.4.0 carry ``version: "4"|"6"`` on each IP; 1.0.0 dropped it.
* 0.1.0 / 0.2.0 have ``ip4``/``ip6`` objects instead of ``ips``: writing one keeps the first
  IPv4 and the first IPv6 address, and each route goes under the family of its destination.
  A result with no address cannot be written as 0.2.0.
* 1.1.0 added interface ``mtu``, ``socketPath``, ``pciID`` and route ``mtu``, ``advmss``,
  ``priority``, ``table``, ``scope``; older versions drop them.

Addresses keep their host bits (``10.1.0.5/24``), as Go's ``types.ParseCIDR`` does, so
addresses and route destinations are :class:`ipaddress.IPv4Interface` /
:class:`ipaddress.IPv6Interface`.
"""

from __future__ import annotations

import ipaddress

from .._record import Record
from ._errors import DecodingFailure, IncompatibleCNIVersion
from ._version import CURRENT_VERSION, SUPPORTED_VERSIONS, is_well_formed, parse_version

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_cidr(value: Any, what: str) -> IPInterface:
    """Parse ``"10.1.0.5/24"`` keeping host bits; DecodingFailure names ``what``.

    Only what Go's ``net.ParseCIDR`` takes: a decimal prefix length (not a netmask such as
    ``/255.255.255.0``, which :mod:`ipaddress` would also read) and no IPv6 zone (``%eth0``).
    """
    if not isinstance(value, str) or "/" not in value:
        raise DecodingFailure(f"invalid {what}: expected an address with prefix, got {value!r}")
    addr, _, prefix = value.partition("/")
    if not (prefix.isascii() and prefix.isdigit()) or "%" in addr:
        raise DecodingFailure(
            f"invalid {what} {value!r}: expected ADDRESS/PREFIXLEN with a decimal prefix length"
        )
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise DecodingFailure(f"invalid {what} {value!r}: {exc}") from exc


def parse_ip(value: Any, what: str) -> IPAddress:
    """Parse a bare IP address (no prefix, no IPv6 zone); DecodingFailure names ``what``."""
    if not isinstance(value, str):
        raise DecodingFailure(f"invalid {what}: expected an IP address string, got {value!r}")
    if "%" in value:
        raise DecodingFailure(f"invalid {what} {value!r}: IPv6 zones are not allowed")
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise DecodingFailure(f"invalid {what} {value!r}: {exc}") from exc


def _opt_ip(obj: dict[str, Any], key: str, what: str) -> IPAddress | None:
    """An optional address: absent, null and "" mean none (Go reads "" as a nil net.IP)."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    return parse_ip(value, f"{what}.{key}")


def _opt_int(obj: dict[str, Any], key: str, what: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodingFailure(f"invalid {what}.{key}: expected an integer, got {value!r}")
    return value


def _str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodingFailure(f"invalid {what}.{key}: expected a string, got {value!r}")
    return value


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodingFailure(f"invalid {what}: expected a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodingFailure(f"invalid {what}: expected a JSON list, got {type(value).__name__}")
    return value


def _str_list(value: Any, what: str) -> list[str]:
    items = _list(value, what)
    if not all(isinstance(i, str) for i in items):
        raise DecodingFailure(f"invalid {what}: expected a list of strings")
    return list(items)


class Interface(Record):
    """An interface the plugin created or touched (``sandbox`` empty means the host)."""

    __slots__ = ("mac", "mtu", "name", "pci_id", "sandbox", "socket_path")
    name: str
    mac: str
    mtu: int
    sandbox: str
    socket_path: str
    pci_id: str

    def __init__(self, name: str, mac: str = "", mtu: int = 0, sandbox: str = "",  # noqa: PLR0917
                 socket_path: str = "", pci_id: str = "") -> None:
        self.name = name
        self.mac = mac
        self.mtu = mtu
        self.sandbox = sandbox
        self.socket_path = socket_path
        self.pci_id = pci_id

    def to_json(self, version: str) -> dict[str, Any]:
        """The interface as ``version`` writes it (mtu, socketPath, pciID only from 1.1.0)."""
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.mtu and _has_1_1(version):
            out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if _has_1_1(version):
            if self.socket_path:
                out["socketPath"] = self.socket_path
            if self.pci_id:
                out["pciID"] = self.pci_id
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Interface:
        """Read one ``interfaces[]`` entry; DecodingFailure on a wrong shape or type."""
        o = _obj(obj, "interface")
        return cls(
            name=_str(o, "name", "interface"),
            mac=_str(o, "mac", "interface"),
            mtu=_opt_int(o, "mtu", "interface") or 0,
            sandbox=_str(o, "sandbox", "interface"),
            socket_path=_str(o, "socketPath", "interface"),
            pci_id=_str(o, "pciID", "interface"),
        )


class IPConfig(Record):
    """One address; ``interface`` indexes ``Result.interfaces`` (None: not said)."""

    __slots__ = ("address", "gateway", "interface")
    address: IPInterface
    gateway: IPAddress | None
    interface: int | None

    def __init__(self, address: IPInterface, gateway: IPAddress | None = None,
                 interface: int | None = None) -> None:
        self.address = address
        self.gateway = gateway
        self.interface = interface

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.address.version

    def to_json(self, version: str) -> dict[str, Any]:
        """The entry as ``version`` writes it (0.3.0 - 0.4.0 add ``"version": "4"|"6"``)."""
        out: dict[str, Any] = {}
        if parse_version(version) < (1, 0, 0):
            out["version"] = str(self.address.version)
        if self.interface is not None:
            out["interface"] = self.interface
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> IPConfig:
        """Read one ``ips[]`` entry; a ``version`` key must match the address family."""
        o = _obj(obj, "ips[]")
        address = parse_cidr(o.get("address"), "ips[].address")
        gateway = _opt_ip(o, "gateway", "ips[]")
        iface = _opt_int(o, "interface", "ips[]")
        declared = o.get("version")
        if declared not in (None, "", "4", "6"):
            raise DecodingFailure(f'invalid ips[].version {declared!r}: expected "4" or "6"')
        if declared and int(declared) != address.version:
            raise DecodingFailure(
                f"ips[].version is {declared} but address {address} is IPv{address.version}"
            )
        return cls(address=address, gateway=gateway, interface=iface)


class Route(Record):
    """A route; 1.1.0 adds mtu, advmss, priority, table and scope."""

    __slots__ = ("advmss", "dst", "gw", "mtu", "priority", "scope", "table")
    dst: IPInterface
    gw: IPAddress | None
    mtu: int
    advmss: int
    priority: int
    table: int | None
    scope: int | None

    def __init__(self, dst: IPInterface, gw: IPAddress | None = None, mtu: int = 0,  # noqa: PLR0917
                 advmss: int = 0, priority: int = 0, table: int | None = None,
                 scope: int | None = None) -> None:
        self.dst = dst
        self.gw = gw
        self.mtu = mtu
        self.advmss = advmss
        self.priority = priority
        self.table = table
        self.scope = scope

    def to_json(self, version: str) -> dict[str, Any]:
        """The route as ``version`` writes it (the tuning keys only from 1.1.0)."""
        out: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        if _has_1_1(version):
            tuning = {"mtu": self.mtu, "advmss": self.advmss, "priority": self.priority}
            out.update({key: value for key, value in tuning.items() if value})
            if self.table is not None:
                out["table"] = self.table
            if self.scope is not None:
                out["scope"] = self.scope
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Route:
        """Read one route object; DecodingFailure on a wrong shape or type."""
        o = _obj(obj, "routes[]")
        return cls(
            dst=parse_cidr(o.get("dst"), "routes[].dst"),
            gw=_opt_ip(o, "gw", "routes[]"),
            mtu=_opt_int(o, "mtu", "routes[]") or 0,
            advmss=_opt_int(o, "advmss", "routes[]") or 0,
            priority=_opt_int(o, "priority", "routes[]") or 0,
            table=_opt_int(o, "table", "routes[]"),
            scope=_opt_int(o, "scope", "routes[]"),
        )


class DNS(Record):
    """Resolver settings; every field is optional."""

    __slots__ = ("domain", "nameservers", "options", "search")
    nameservers: list[str]
    domain: str
    search: list[str]
    options: list[str]

    def __init__(self, nameservers: list[str] | None = None, domain: str = "",
                 search: list[str] | None = None, options: list[str] | None = None) -> None:
        self.nameservers = [] if nameservers is None else nameservers
        self.domain = domain
        self.search = [] if search is None else search
        self.options = [] if options is None else options

    def is_empty(self) -> bool:
        """True when no field is set."""
        return not (self.nameservers or self.domain or self.search or self.options)

    def to_json(self) -> dict[str, Any]:
        """The object with only the fields that are set (the same in every version)."""
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> DNS:
        """Read a ``dns`` object (null is empty); DecodingFailure on a wrong shape or type."""
        if obj is None:
            return cls()
        o = _obj(obj, "dns")
        return cls(
            nameservers=_str_list(o.get("nameservers"), "dns.nameservers"),
            domain=_str(o, "domain", "dns"),
            search=_str_list(o.get("search"), "dns.search"),
            options=_str_list(o.get("options"), "dns.options"),
        )


class Result(Record):
    """A plugin's ADD result (the 1.1.0 model; ``cni_version`` is what it was read as)."""

    __slots__ = ("cni_version", "dns", "interfaces", "ips", "routes")
    cni_version: str
    interfaces: list[Interface]
    ips: list[IPConfig]
    routes: list[Route]
    dns: DNS

    def __init__(self, cni_version: str = CURRENT_VERSION,
                 interfaces: list[Interface] | None = None, ips: list[IPConfig] | None = None,
                 routes: list[Route] | None = None, dns: DNS | None = None) -> None:
        self.cni_version = cni_version
        self.interfaces = [] if interfaces is None else interfaces
        self.ips = [] if ips is None else ips
        self.routes = [] if routes is None else routes
        self.dns = DNS() if dns is None else dns

    def to_json(self, version: str | None = None) -> dict[str, Any]:
        """The result as ``version`` (default: ``cni_version``) would print it."""
        version = version or self.cni_version
        if version not in SUPPORTED_VERSIONS:
            raise IncompatibleCNIVersion(
                f'cannot convert result to unsupported version "{version}"',
                f"supported: {list(SUPPORTED_VERSIONS)}",
            )
        if parse_version(version) < (0, 3, 0):
            return self._to_legacy(version)
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_json(version) for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_json(version) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_json(version) for r in self.routes]
        out["dns"] = self.dns.to_json()
        return out

    def _to_legacy(self, version: str) -> dict[str, Any]:
        ip4 = next((ip for ip in self.ips if ip.family == 4), None)
        ip6 = next((ip for ip in self.ips if ip.family == 6), None)
        if ip4 is None and ip6 is None:
            raise IncompatibleCNIVersion(
                f"cannot convert result to version {version}", "the result has no IP address"
            )
        out: dict[str, Any] = {"cniVersion": version}
        for key, ip in (("ip4", ip4), ("ip6", ip6)):
            if ip is None:
                continue
            entry: dict[str, Any] = {"ip": str(ip.address)}
            if ip.gateway is not None:
                entry["gateway"] = str(ip.gateway)
            routes = [r.to_json("0.2.0") for r in self.routes if r.dst.version == ip.family]
            if routes:
                entry["routes"] = routes
            out[key] = entry
        out["dns"] = self.dns.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Any, version: str | None = None) -> Result:
        """Read a result of any supported version (``version`` overrides ``cniVersion``).

        Malformed input is a DecodingFailure; a well-formed version we do not speak is an
        IncompatibleCNIVersion. Nothing else escapes.
        """
        o = _obj(obj, "result")
        declared = o.get("cniVersion")
        if declared is not None and not isinstance(declared, str):
            raise DecodingFailure(f"invalid result cniVersion: expected a string, got {declared!r}")
        # Like libcni, a result without cniVersion is a 0.1.0 one.
        version = version or declared or "0.1.0"
        if not is_well_formed(version):
            raise DecodingFailure(
                f"invalid result cniVersion {version!r}: expected MAJOR.MINOR.PATCH"
            )
        if version not in SUPPORTED_VERSIONS:
            raise IncompatibleCNIVersion(
                f"unsupported result version {version!r}", f"supported: {list(SUPPORTED_VERSIONS)}"
            )
        if parse_version(version) < (0, 3, 0):
            return cls._from_legacy(o, version)
        return cls(
            cni_version=version,
            interfaces=[Interface.from_json(i) for i in _list(o.get("interfaces"), "interfaces")],
            ips=[IPConfig.from_json(i) for i in _list(o.get("ips"), "ips")],
            routes=[Route.from_json(r) for r in _list(o.get("routes"), "routes")],
            dns=DNS.from_json(o.get("dns")),
        )

    @classmethod
    def _from_legacy(cls, o: dict[str, Any], version: str) -> Result:
        result = cls(cni_version=version, dns=DNS.from_json(o.get("dns")))
        for key, family in (("ip4", 4), ("ip6", 6)):
            entry = o.get(key)
            if entry is None:
                continue
            e = _obj(entry, key)
            address = parse_cidr(e.get("ip"), f"{key}.ip")
            if address.version != family:
                raise DecodingFailure(f"{key}.ip {address} is not an IPv{family} address")
            gateway = _opt_ip(e, "gateway", key)
            result.ips.append(IPConfig(address=address, gateway=gateway))
            routes = _list(e.get("routes"), f"{key}.routes")
            result.routes.extend(Route.from_json(r) for r in routes)
        return result

    def convert(self, version: str) -> Result:
        """A copy that is exactly what ``version`` can carry (lossy conversions applied)."""
        return Result.from_json(self.to_json(version))


def _has_1_1(version: str) -> bool:
    return parse_version(version) >= (1, 1, 0)
