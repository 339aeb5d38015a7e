"""portmap: forward host ports to the container (a chained plugin, after bridge or ptp).

Example conflist entry::

    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}

The runtime passes the mappings as ``runtimeConfig.portMappings``:
``[{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "192.0.2.1"}]``
(keys read case-insensitively: containerd writes ``HostPort``, podman ``hostPort``).

ADD writes DNAT rules from each host port to the container address of each family found
in ``prevResult`` (the first address of each family on the sandbox interface ``CNI_IFNAME``),
masquerades hairpin and localhost connections (``snat``, default true; ``masqAll`` for all
mapped traffic), sets ``route_localnet`` on the interface toward the container so that
127.0.0.1 works, deletes stale UDP conntrack entries of the host ports, and passes
``prevResult`` through. Without mappings it touches nothing.

DEL finds the rules by network, container id and ifname (no prevResult needed); CHECK
verifies them; GC (cniVersion 1.1.0) removes those of attachments not in
``cni.dev/valid-attachments``.

Backends (``backend``): ``iptables`` (the default, as the reference's, when the iptables tools
are installed; else ``nftables``) or ``nftables``. ``markMasqBit`` and
``externalSetMarkChain`` only exist for iptables; ``conditionsV4``/``conditionsV6`` are
iptables matches (``["!", "-d", "192.0.2.0/24"]``) or nftables ones
(``["ip", "saddr", "!=", "192.0.2.0/24"]``), parsed by the backend (the grammar is in
``host/netfilter/portmap/_conditions.py``). Options of the other backend are a config error;
without ``backend`` such options pick their backend.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from ...host import netfilter_backend
from ...host.netfilter import portmap as host_portmap
from ...host.netfilter.portmap import BACKENDS, IPInterface, Owner, PortMapping, PortMapSpec
from ...skel import CmdArgs, Plugin
from ...spec import CNIError, InvalidNetworkConfig, Result, bool_field
from .._fields import int_field, str_field, str_list, valid_attachments

log = logging.getLogger("pycni.portmap")

#: Kubernetes uses mark bits 14 and 15, Calico 20-31 (the reference plugin's default).
DEFAULT_MARK_BIT = 13
_IPTABLES_ONLY = ("markMasqBit", "externalSetMarkChain")


def conditions_backend(conditions: tuple[str, ...]) -> str | None:
    """Which backend's syntax ``conditions`` are in (None if empty).

    Every iptables match starts with an option (``-d``, ``-m``), possibly negated with a
    leading ``!``; no nftables expression does.
    """
    tokens = [t for t in conditions if t]
    if not tokens:
        return None
    first = tokens[1] if tokens[0] == "!" and len(tokens) > 1 else tokens[0]
    return "iptables" if first.startswith("-") else "nftables"


def _lower_keys(entry: dict[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in entry.items()}


def _port(entry: dict[str, Any], key: str, index: int) -> int:
    value = entry.get(key.lower())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise InvalidNetworkConfig(f'invalid portMappings[{index}].{key}: expected a port '
                                   f"number 1-65535, got {value!r}")
    return value


def parse_mappings(runtime_config: dict[str, Any]) -> tuple[PortMapping, ...]:
    """``runtimeConfig.portMappings`` (any key case) as PortMappings; code 7 on bad entries."""
    rc = _lower_keys(runtime_config)
    items = rc.get("portmappings")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise InvalidNetworkConfig('invalid runtimeConfig "portMappings": expected a list')
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidNetworkConfig(f"invalid portMappings[{index}]: expected an object")
        entry = _lower_keys(item)
        protocol = entry.get("protocol", "tcp")
        if not isinstance(protocol, str) or protocol.lower() not in host_portmap.PROTOCOLS:
            raise InvalidNetworkConfig(f"invalid portMappings[{index}].protocol {protocol!r}: "
                                       f"expected one of {list(host_portmap.PROTOCOLS)}")
        host_ip_text = entry.get("hostip") or ""
        if not isinstance(host_ip_text, str):
            raise InvalidNetworkConfig(f"invalid portMappings[{index}].hostIP {host_ip_text!r}")
        try:
            host_ip = ipaddress.ip_address(host_ip_text) if host_ip_text else None
        except ValueError as exc:
            raise InvalidNetworkConfig(f"invalid portMappings[{index}].hostIP "
                                       f"{host_ip_text!r}: not an IP address") from exc
        out.append(PortMapping(host_port=_port(entry, "hostPort", index),
                               container_port=_port(entry, "containerPort", index),
                               protocol=protocol.lower(), host_ip=host_ip))
    return tuple(out)


@dataclass(frozen=True)
class PortMapConfig:
    """The plugin's keys (wire names in comments), validated."""

    backend: str                                  # backend
    snat: bool = True                             # snat
    masq_all: bool = False                        # masqAll
    mark_bit: int = DEFAULT_MARK_BIT              # markMasqBit (iptables)
    external_set_mark_chain: str | None = None    # externalSetMarkChain (iptables)
    conditions_v4: tuple[str, ...] = ()           # conditionsV4
    conditions_v6: tuple[str, ...] = ()           # conditionsV6
    mappings: tuple[PortMapping, ...] = ()        # runtimeConfig.portMappings

    @classmethod
    def load(cls, raw: dict[str, Any], runtime_config: dict[str, Any]) -> PortMapConfig:
        """Validate; InvalidNetworkConfig (code 7) names the offending key."""
        mark_bit = int_field(raw, "markMasqBit")
        external = str_field(raw, "externalSetMarkChain")
        if mark_bit is not None and external is not None:
            raise InvalidNetworkConfig("cannot specify both externalSetMarkChain and markMasqBit")
        if mark_bit is not None and mark_bit > 31:
            raise InvalidNetworkConfig(f'invalid "markMasqBit" {mark_bit}: must be 0-31')
        if external == "":
            raise InvalidNetworkConfig('invalid "externalSetMarkChain": empty chain name')
        cond4, cond6 = tuple(str_list(raw, "conditionsV4")), tuple(str_list(raw, "conditionsV6"))
        wants: dict[str, list[str]] = {"iptables": [], "nftables": []}
        wants["iptables"] += [k for k in _IPTABLES_ONLY if raw.get(k) is not None]
        for key, conds in (("conditionsV4", cond4), ("conditionsV6", cond6)):
            kind = conditions_backend(conds)
            if kind is not None:
                wants[kind].append(key)
        backend = raw.get("backend")
        if backend is not None and backend not in BACKENDS:
            raise InvalidNetworkConfig(f'invalid "backend" {backend!r}: expected one of '
                                       f"{sorted(BACKENDS)}")
        if backend is None:
            if wants["iptables"] and wants["nftables"]:
                raise InvalidNetworkConfig(
                    "config mixes iptables-only options "
                    f"({', '.join(wants['iptables'])}) and nftables conditions "
                    f"({', '.join(wants['nftables'])}); set \"backend\"")
            backend = next((b for b in ("iptables", "nftables") if wants[b]),
                           netfilter_backend())
        other = "iptables" if backend == "nftables" else "nftables"
        if wants[other]:
            raise InvalidNetworkConfig(
                f"{backend} backend was requested but the config has {other}-specific "
                f"options: {', '.join(wants[other])}")
        cond4 = BACKENDS[backend].parse_conditions(cond4, 4, "conditionsV4")
        cond6 = BACKENDS[backend].parse_conditions(cond6, 6, "conditionsV6")
        return cls(
            backend=backend,
            snat=bool_field(raw, "snat", True),
            masq_all=bool_field(raw, "masqAll", False),
            mark_bit=DEFAULT_MARK_BIT if mark_bit is None else mark_bit,
            external_set_mark_chain=external,
            conditions_v4=cond4,
            conditions_v6=cond6,
            mappings=parse_mappings(runtime_config),
        )


def container_addresses(result: Result, ifname: str) -> list[IPInterface]:
    """The first address of each family on the sandbox interface ``ifname``.

    As the reference plugin: an address is skipped only when it names an interface that is
    not ``ifname`` or is not in a sandbox; an address without an interface index counts.
    """
    chosen: dict[int, IPInterface] = {}
    for ip in result.ips:
        if ip.family in chosen:
            continue
        idx = ip.interface
        if idx is not None and 0 <= idx < len(result.interfaces):
            iface = result.interfaces[idx]
            if iface.name != ifname or not iface.sandbox:
                continue
        chosen[ip.family] = ip.address
    return [chosen[f] for f in sorted(chosen)]


class PortMap(Plugin):
    """The ``portmap`` plugin."""

    type_name = "portmap"

    @staticmethod
    def _load(args: CmdArgs) -> PortMapConfig:
        return PortMapConfig.load(args.conf.raw, args.conf.runtime_config)

    @staticmethod
    def _specs(args: CmdArgs, cfg: PortMapConfig, result: Result) -> list[PortMapSpec]:
        owner = Owner(args.conf.name, args.container_id, args.ifname)
        return [PortMapSpec(owner=owner, container=address, mappings=cfg.mappings,
                            snat=cfg.snat, masq_all=cfg.masq_all,
                            conditions=cfg.conditions_v4 if address.version == 4
                            else cfg.conditions_v6,
                            mark_bit=cfg.mark_bit,
                            external_set_mark_chain=cfg.external_set_mark_chain)
                for address in container_addresses(result, args.ifname)]

    def add(self, args: CmdArgs) -> Result:
        prev = args.conf.prev_result
        if prev is None:
            raise InvalidNetworkConfig("portmap must be called as a chained plugin: "
                                       "no prevResult in the config")
        cfg = self._load(args)
        if not cfg.mappings:
            return prev
        specs = self._specs(args, cfg, prev)
        if not specs:
            log.warning("portmap: no container address for %s in prevResult; nothing mapped",
                        args.ifname)
            return prev
        backend = BACKENDS[cfg.backend]()
        backend.forward(specs)
        try:
            if cfg.snat:
                for spec in specs:
                    if isinstance(spec.container, ipaddress.IPv4Interface):
                        host_portmap.enable_route_localnet(spec.container.ip)
        except CNIError:
            backend.unforward(specs[0].owner)
            raise
        # After the rules exist, so that new packets of a flushed flow meet the DNAT.
        self._flush_udp(cfg, sorted({s.family for s in specs}))
        return prev

    @staticmethod
    def _flush_udp(cfg: PortMapConfig, families: list[int]) -> None:
        """Best effort, as upstream: a failure leaves a flow stale until it times out."""
        ports = [m.host_port for m in cfg.mappings if m.protocol == "udp"]
        if not ports:
            return
        for family in families:
            try:
                host_portmap.flush_udp_conntrack(family, ports)
            except CNIError as exc:
                log.warning("portmap: could not delete stale UDP conntrack entries: %s", exc)

    def delete(self, args: CmdArgs) -> None:
        # Runs even without mappings in the config: a runtime that leaves runtimeConfig out
        # of DEL (or a config edited since ADD) must not leak rules. Nothing is created here.
        owner = Owner(args.conf.name, args.container_id, args.ifname)
        try:
            cfg = self._load(args)
        except InvalidNetworkConfig as exc:
            # ADD's rules (one backend's options with the other, bad mappings) cannot block
            # a teardown: the rules are found by owner, so look in every backend there is.
            log.warning("portmap: DEL with a config ADD refuses (%s); removing this "
                        "attachment's rules from every backend", exc.msg)
            for name, backend in BACKENDS.items():
                if backend.available():
                    try:
                        backend().unforward(owner)
                    except CNIError as err:
                        log.warning("portmap: could not look for %s rules of %s: %s", name,
                                    owner.container_id, err)
            return
        BACKENDS[cfg.backend]().unforward(owner)
        if "backend" not in args.conf.raw:
            self._unforward_other("nftables" if cfg.backend == "iptables" else "iptables",
                                  owner)
        self._flush_udp(cfg, [4, 6])

    @staticmethod
    def _unforward_other(backend: str, owner: Owner) -> None:
        """Without ``backend`` the rules may be another backend's: the reference's iptables
        on a node that switched to pycni with containers running, or nftables, which older
        pycni wrote by default. They must not outlive the container. Read-only when there
        are none; best effort, DEL must succeed."""
        if not BACKENDS[backend].available():
            return
        try:
            BACKENDS[backend]().unforward(owner)
        except CNIError as exc:
            log.warning("portmap: could not look for %s rules of %s: %s", backend,
                        owner.container_id, exc)

    def check(self, args: CmdArgs) -> None:
        prev = args.conf.prev_result
        if prev is None:
            raise InvalidNetworkConfig("portmap CHECK needs the prevResult")
        cfg = self._load(args)
        if not cfg.mappings:
            return
        specs = self._specs(args, cfg, prev)
        if specs:
            BACKENDS[cfg.backend]().check(specs)

    def gc(self, args: CmdArgs) -> None:
        valid = frozenset(valid_attachments(args.conf.raw))
        try:
            names = [self._load(args).backend]
        except InvalidNetworkConfig:
            # As for DEL: rules are found by network and owner, in whichever backend.
            names = [name for name, backend in BACKENDS.items() if backend.available()]
        for name in names:
            BACKENDS[name]().gc(args.conf.name, valid)


main = PortMap.main
