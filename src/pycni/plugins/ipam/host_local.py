"""host-local: allocate addresses from range sets, keeping state in files on this host.

Example config (the IPAM section of a main plugin's config)::

    {
      "cniVersion": "1.1.0", "name": "mynet", "type": "bridge",
      "ipam": {
        "type": "host-local",
        "ranges": [
          [{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20", "rangeEnd": "10.10.3.50",
            "gateway": "10.10.0.254"}, {"subnet": "172.16.5.0/24"}],
          [{"subnet": "2001:db8:1::/64"}]
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/var/lib/cni/networks",
        "resolvConf": "/etc/resolv.conf"
      }
    }

ADD returns one address from each range set (``ranges``, after the legacy single range
``subnet``/``rangeStart``/``rangeEnd``/``gateway`` if given), with the range's gateway, the
configured ``routes`` and the DNS settings parsed from ``resolvConf``. Specific addresses can
be requested with CNI_ARGS ``IP``, ``args.cni.ips`` and the ``ips`` capability
(``runtimeConfig.ips``); the ``ipRanges`` capability replaces the configured ranges. DEL
releases what the (container ID, interface) pair holds (reading only ``name`` and
``dataDir``, so a config broken after ADD still releases); CHECK verifies that it holds an
address in every range set; GC releases reservations of attachments the runtime no longer
lists; STATUS reports an unwritable store or an exhausted range set.

The state in ``<dataDir>/<network>`` is byte for byte the Go reference plugin's, and both
lock the same file, so they can share a network (see :mod:`pycni.ipam`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..._record import FrozenRecord, set_fields
from ...ipam import (
    DEFAULT_DATA_DIR,
    DiskStore,
    Range,
    RangeSet,
    Request,
    allocate,
    check_disjoint,
    exhausted,
    parse_address,
    parse_range_sets,
    parse_resolv_conf,
    parse_routes,
    release,
)
from ...skel import CmdArgs, Plugin
from ...spec import (
    DNS,
    InvalidNetworkConfig,
    IPConfig,
    NetworkConfig,
    PluginNotAvailable,
    Result,
    Route,
    UnknownContainer,
    parse_version,
    str_default,
)
from .._fields import valid_attachments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ...ipam import Store

#: CNI_ARGS keys host-local reads (with IgnoreUnknown semantics for the others).
CNI_ARGS_KEYS = ("IP",)


def _ipam(conf: NetworkConfig) -> dict[str, Any]:
    if conf.ipam is None:
        raise InvalidNetworkConfig('IPAM config missing: "ipam" is required for host-local')
    return conf.ipam


def parse_requested(conf: NetworkConfig, cni_args: Mapping[str, str]) -> tuple[Request, ...]:
    """Requested addresses: CNI_ARGS ``IP``, then ``args.cni.ips``, then ``runtimeConfig.ips``.

    Each may be written with a prefix length (``10.1.0.5/24``), which is ignored.
    """
    out: list[Request] = []
    if cni_args.get("IP"):
        out.append(Request(parse_address(cni_args["IP"], "CNI_ARGS IP", allow_prefix=True),
                           "CNI_ARGS IP"))
    for source, value in (("args.cni.ips", conf.cni_args().get("ips")),
                          ("runtimeConfig.ips", conf.runtime_config.get("ips"))):
        if value is None:
            continue
        if not isinstance(value, list):
            raise InvalidNetworkConfig(f'invalid "{source}": expected a list of IP addresses')
        for i, item in enumerate(value):
            name = f"{source}[{i}]"
            out.append(Request(parse_address(item, name, allow_prefix=True), name))
    return tuple(out)


class HostLocalConfig(FrozenRecord):
    """host-local's view of the config: where to allocate from and what to return."""

    __slots__ = (
        "cni_version",
        "data_dir",
        "network",
        "range_sets",
        "requests",
        "resolv_conf",
        "routes",
    )
    network: str
    cni_version: str
    range_sets: tuple[RangeSet, ...]
    routes: tuple[Route, ...]
    data_dir: str
    resolv_conf: str
    requests: tuple[Request, ...]

    def __init__(self, network: str, cni_version: str, range_sets: tuple[RangeSet, ...],  # noqa: PLR0917
                 routes: tuple[Route, ...] = (), data_dir: str = DEFAULT_DATA_DIR,
                 resolv_conf: str = "", requests: tuple[Request, ...] = ()) -> None:
        set_fields(self, network, cni_version, range_sets, routes, data_dir, resolv_conf, requests)

    @classmethod
    def load(cls, conf: NetworkConfig, cni_args: Mapping[str, str]) -> HostLocalConfig:
        """Validate ``conf.ipam``; every error names the offending field."""
        ipam = _ipam(conf)
        sets: list[RangeSet] = []
        if ipam.get("subnet") not in (None, ""):
            sets.append(RangeSet((Range.from_json(ipam, "ipam"),)))
        else:
            legacy = [k for k in ("rangeStart", "rangeEnd", "gateway")
                      if ipam.get(k) not in (None, "")]
            if legacy:
                raise InvalidNetworkConfig(f'invalid "ipam.{legacy[0]}": it belongs to the '
                                           'legacy "ipam.subnet", which is not set (use '
                                           '"ipam.ranges")')
        if ipam.get("ranges") is not None:
            sets.extend(parse_range_sets(ipam["ranges"], "ipam.ranges"))
        check_disjoint(sets, "ipam.ranges")
        runtime_ranges = conf.runtime_config.get("ipRanges")
        if runtime_ranges:
            sets = list(parse_range_sets(runtime_ranges, "runtimeConfig.ipRanges"))
        if not sets:
            raise InvalidNetworkConfig('no IP ranges specified: set "ipam.ranges" (or the '
                                       'legacy "ipam.subnet")')
        if parse_version(conf.cni_version) < (0, 3, 0):
            for family in (4, 6):
                if sum(1 for s in sets if s.version == family) > 1:
                    raise InvalidNetworkConfig(
                        f'invalid "ipam.ranges": cniVersion {conf.cni_version} allows one '
                        f"address per family, the config has several IPv{family} range sets"
                    )
        return cls(
            network=conf.name,
            cni_version=conf.cni_version,
            range_sets=tuple(sets),
            routes=parse_routes(ipam.get("routes"), "ipam.routes"),
            data_dir=str_default(ipam, "dataDir", DEFAULT_DATA_DIR, what="ipam."),
            resolv_conf=str_default(ipam, "resolvConf", "", what="ipam."),
            requests=parse_requested(conf, cni_args),
        )

    def store(self) -> Store:
        """The network's store (host-local's files in ``dataDir``)."""
        return DiskStore(self.network, self.data_dir)


def store_for(conf: NetworkConfig) -> Store:
    """The store, from ``name`` and ``ipam.dataDir`` alone.

    DEL and GC need nothing else, so a config whose ranges were broken after ADD can still
    release what it holds.
    """
    ipam = _ipam(conf)
    return DiskStore(conf.name, str_default(ipam, "dataDir", DEFAULT_DATA_DIR, what="ipam."))


class HostLocal(Plugin):
    """The ``host-local`` IPAM plugin."""

    type_name = "host-local"

    @staticmethod
    def _config(args: CmdArgs) -> HostLocalConfig:
        return HostLocalConfig.load(args.conf, args.cni_args(CNI_ARGS_KEYS))

    def add(self, args: CmdArgs) -> Result:
        cfg = self._config(args)
        dns = parse_resolv_conf(cfg.resolv_conf, "ipam.resolvConf") if cfg.resolv_conf else DNS()
        allocations = allocate(cfg.store(), cfg.range_sets, container_id=args.container_id,
                               ifname=args.ifname, requests=cfg.requests)
        return Result(
            ips=[IPConfig(address=a.interface, gateway=a.range.gateway) for a in allocations],
            routes=list(cfg.routes),
            dns=dns,
        )

    def delete(self, args: CmdArgs) -> None:
        release(store_for(args.conf), args.container_id, args.ifname)

    def check(self, args: CmdArgs) -> None:
        cfg = self._config(args)
        store = cfg.store()
        with store.locked(create=False) as present:
            owned = store.owned(args.container_id, args.ifname) if present else []
        for index, rs in enumerate(cfg.range_sets):
            if not any(rs.contains(r.ip) for r in owned):
                raise UnknownContainer(
                    f"host-local: container {args.container_id!r} interface {args.ifname!r} "
                    f"holds no address in range set {index} ({rs}) of network {cfg.network!r}",
                    f"held: {[str(r.ip) for r in owned]}",
                )

    def status(self, args: CmdArgs) -> None:
        cfg = self._config(args)
        store = cfg.store()
        problem = store.writable()
        if problem:
            raise PluginNotAvailable(f"host-local: cannot write reservations of network "
                                     f"{cfg.network!r}", problem)
        full = exhausted(store, cfg.range_sets)
        if full:
            raise PluginNotAvailable(
                f"host-local: no free address in network {cfg.network!r}",
                "exhausted: " + "; ".join(f"range set {i} ({cfg.range_sets[i]})" for i in full),
            )

    def gc(self, args: CmdArgs) -> None:
        valid = valid_attachments(args.conf.raw)
        store = store_for(args.conf)
        with store.locked(create=False) as present:
            if present:
                store.gc(valid)


main = HostLocal.main
