"""bridge: connect the container to a Linux bridge in the host namespace through a veth pair.

Example config::

    {"cniVersion": "1.1.0", "name": "mynet", "type": "bridge", "bridge": "cni0",
     "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}}

The bridge is created on first use. With ``isGateway`` (implied by ``isDefaultGateway``) it
gets each subnet's gateway address and the host forwards; with ``isDefaultGateway`` the
container also gets a default route through it. Without ``ipam`` (or with ``"ipam": {}``) the
attachment is L2 only. The container MAC may be set by ``runtimeConfig.mac`` (capability
``mac``), ``args.cni.mac`` or CNI_ARGS ``MAC`` (that is the precedence, highest first).

Keys: ``bridge`` (default ``cni0``), ``isGateway``, ``isDefaultGateway``, ``forceAddress``,
``ipMasq``, ``ipMasqBackend``, ``mtu``, ``hairpinMode``, ``promiscMode``, ``vlan``,
``vlanTrunk`` (``[{"id": 5}, {"minID": 10, "maxID": 20}]``), ``preserveDefaultVlan``
(default true), ``enabledad``, ``macspoofchk``, ``disableContainerInterface``,
``portIsolation``, ``ipam``, ``dns``.

Unlike the reference, a failed ADD removes the veth, the spoof-check and masquerade rules
and the lease before it returns, and DEL removes masquerade rules even when the netns is gone.
"""

from __future__ import annotations

import ipaddress
import sys

from ... import host
from ..._record import FrozenRecord, set_fields
from ...host import enter as enter_netns
from ...skel import IFNAME_MAX, CmdArgs, Plugin
from ...spec import (
    Interface,
    InvalidNetworkConfig,
    IPInterface,
    KernelError,
    PluginNotAvailable,
    Result,
    Route,
    bool_field,
)
from .._fields import ifname_field, int_field, mtu_field
from ._common import (
    apply_dns,
    check_container,
    create_container_veth,
    delete_link_and_lease,
    gc_attachments,
    ipam_check,
    ipam_into,
    ipam_status,
    ipam_type,
    masq_backend,
    prev_result,
    requested_mac,
    run_with_rollback,
    setup_masq,
    teardown_flag,
    teardown_masq,
    teardown_masq_backend,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_BRIDGE = "cni0"
MAX_VLAN = 4094


def _vlan_trunk(raw: Any) -> tuple[int, ...]:
    """``vlanTrunk`` entries (``id`` and/or ``minID``..``maxID``) as sorted unique ids."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidNetworkConfig('invalid "vlanTrunk": expected a list of objects')
    vids: set[int] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidNetworkConfig('invalid "vlanTrunk" entry: expected an object')
        lo = int_field(item, "minID", what="vlanTrunk[].")
        hi = int_field(item, "maxID", what="vlanTrunk[].")
        if (lo is None) != (hi is None):
            missing = "minID" if lo is None else "maxID"
            raise InvalidNetworkConfig(f'invalid "vlanTrunk" entry: minID and maxID go together, '
                                       f"{missing} is missing")
        if lo is not None and hi is not None:
            for key, value in (("minID", lo), ("maxID", hi)):
                if not 1 <= value <= MAX_VLAN:
                    raise InvalidNetworkConfig(f'invalid "vlanTrunk" {key} {value}: '
                                               f"expected 1-{MAX_VLAN}")
            if hi < lo:
                raise InvalidNetworkConfig(f'invalid "vlanTrunk" entry: minID {lo} is greater '
                                           f"than maxID {hi}")
            vids.update(range(lo, hi + 1))
        vid = int_field(item, "id", what="vlanTrunk[].")
        if vid is not None:
            if not 1 <= vid <= MAX_VLAN:
                raise InvalidNetworkConfig(f'invalid "vlanTrunk" id {vid}: expected 1-{MAX_VLAN}')
            vids.add(vid)
    return tuple(sorted(vids))


class BridgeConfig(FrozenRecord):
    """The bridge plugin's keys (wire names in the module docstring)."""

    __slots__ = (
        "bridge",
        "disable_container_interface",
        "enable_dad",
        "force_address",
        "hairpin_mode",
        "ip_masq",
        "ip_masq_backend",
        "ipam_type",
        "is_default_gateway",
        "is_gateway",
        "mac",
        "mac_spoof_check",
        "mtu",
        "port_isolation",
        "preserve_default_vlan",
        "promisc_mode",
        "vlan",
        "vlan_trunk",
    )
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    force_address: bool
    ip_masq: bool
    ip_masq_backend: str | None
    mtu: int
    hairpin_mode: bool
    promisc_mode: bool
    vlan: int
    vlan_trunk: tuple[int, ...]
    preserve_default_vlan: bool
    enable_dad: bool
    mac_spoof_check: bool
    disable_container_interface: bool
    port_isolation: bool
    ipam_type: str
    mac: str

    def __init__(self, bridge: str = DEFAULT_BRIDGE, is_gateway: bool = False,  # noqa: PLR0917
                 is_default_gateway: bool = False, force_address: bool = False,
                 ip_masq: bool = False, ip_masq_backend: str | None = None, mtu: int = 0,
                 hairpin_mode: bool = False, promisc_mode: bool = False, vlan: int = 0,
                 vlan_trunk: tuple[int, ...] = (), preserve_default_vlan: bool = True,
                 enable_dad: bool = False, mac_spoof_check: bool = False,
                 disable_container_interface: bool = False, port_isolation: bool = False,
                 ipam_type: str = "", mac: str = "") -> None:
        set_fields(self, bridge, is_gateway, is_default_gateway, force_address, ip_masq,
                   ip_masq_backend, mtu, hairpin_mode, promisc_mode, vlan, vlan_trunk,
                   preserve_default_vlan, enable_dad, mac_spoof_check, disable_container_interface,
                   port_isolation, ipam_type, mac)

    @property
    def layer3(self) -> bool:
        """IPAM is configured (else the attachment is L2 only)."""
        return bool(self.ipam_type)

    @classmethod
    def load(cls, args: CmdArgs, *, with_mac: bool = True) -> BridgeConfig:
        """Read and validate the keys; InvalidNetworkConfig names the offending one."""
        raw = args.conf.raw
        bridge = ifname_field(raw, "bridge") or DEFAULT_BRIDGE
        vlan = int_field(raw, "vlan") or 0
        if vlan > MAX_VLAN:
            raise InvalidNetworkConfig(f"invalid VLAN ID {vlan} (must be between 0 and {MAX_VLAN})")
        trunk = _vlan_trunk(raw.get("vlanTrunk"))
        if vlan and trunk:
            raise InvalidNetworkConfig('cannot set "vlan" and "vlanTrunk" at the same time')
        is_default_gateway = bool_field(raw, "isDefaultGateway")
        conf = cls(
            bridge=bridge,
            is_gateway=bool_field(raw, "isGateway") or is_default_gateway,
            is_default_gateway=is_default_gateway,
            force_address=bool_field(raw, "forceAddress"),
            ip_masq=bool_field(raw, "ipMasq"),
            ip_masq_backend=masq_backend(args),
            mtu=mtu_field(raw) or 0,
            hairpin_mode=bool_field(raw, "hairpinMode"),
            promisc_mode=bool_field(raw, "promiscMode"),
            vlan=vlan,
            vlan_trunk=trunk,
            preserve_default_vlan=bool_field(raw, "preserveDefaultVlan", default=True),
            enable_dad=bool_field(raw, "enabledad"),
            mac_spoof_check=bool_field(raw, "macspoofchk"),
            disable_container_interface=bool_field(raw, "disableContainerInterface"),
            port_isolation=bool_field(raw, "portIsolation"),
            ipam_type=ipam_type(args),
            mac=requested_mac(args) if with_mac else "",
        )
        if conf.hairpin_mode and conf.promisc_mode:
            raise InvalidNetworkConfig("cannot set hairpinMode and promiscMode at the same time")
        if conf.layer3 and conf.disable_container_interface:
            raise InvalidNetworkConfig("cannot use IPAM when disableContainerInterface is set")
        return conf


def _spoof_id(args: CmdArgs) -> str:
    return f"{args.container_id}-{args.ifname}"


def _gateways(result: Result, conf: BridgeConfig) -> dict[int, list[IPInterface]]:
    """Fill in gateways and the default routes; return the bridge's addresses per family.

    A missing gateway is the subnet's first address when the bridge is the gateway.
    """
    gws: dict[int, list[IPInterface]] = {4: [], 6: []}
    has_default: dict[int, bool] = {4: False, 6: False}
    for ipc in result.ips:
        family = ipc.family
        if ipc.gateway is None and conf.is_gateway:
            ipc.gateway = ipc.address.network.network_address + 1
        if conf.is_default_gateway and not has_default[family]:
            default = ipaddress.ip_interface("0.0.0.0/0" if family == 4 else "::/0")
            has_default[family] = any(r.gw is not None and r.dst == default
                                      for r in result.routes)
            if not has_default[family]:
                result.routes.append(Route(dst=default, gw=ipc.gateway))
                has_default[family] = True
        if conf.is_gateway and ipc.gateway is not None:
            gws[family].append(ipaddress.ip_interface(f"{ipc.gateway}/{ipc.address.network.prefixlen}"))
    return gws


def _setup_host_port(peer: str, conf: BridgeConfig, *, peer_index: int = 0,
                     bridge_index: int = 0) -> None:
    """The host end of a new veth: up, no RAs, on the bridge with its port flags and VLANs
    (the ifindexes, when known, spare the lookups)."""
    host.set_link_up(peer, index=peer_index)
    host.sysctl_try_set(f"net/ipv6/conf/{peer}/accept_ra", "0")
    host.attach_port(peer, conf.bridge, hairpin=conf.hairpin_mode,
                     isolated=conf.port_isolation, port_index=peer_index,
                     bridge_index=bridge_index)
    if conf.vlan or conf.vlan_trunk:
        host.set_port_vlans(peer, pvid=conf.vlan, trunk=conf.vlan_trunk,
                            remove_default=not conf.preserve_default_vlan)


def _delete_unused_vlan_gateway(conf: BridgeConfig, name: str, gw_port: str,
                                own_port: str) -> None:
    """Undo of :func:`_ensure_vlan_interface`: the gateway this ADD made, unless another
    attachment's port joined its VLAN meanwhile (an ADD that found it made uses it)."""
    users = host.vlan_users(conf.bridge, conf.vlan, exclude=frozenset({gw_port, own_port}))
    if users:
        print(f"pycni: rollback: keeping vlan gateway {name}: vlan {conf.vlan} is used by "
              f"{', '.join(users)}", file=sys.stderr)
        return
    host.delete_link(name)


def _ensure_vlan_interface(conf: BridgeConfig, rollback: host.Undo,
                           own_port: str) -> host.LinkInfo:
    """The ``<bridge>.<vlan>`` veth whose peer is an access port: the VLAN's gateway."""
    name = f"{conf.bridge}.{conf.vlan}"
    if len(name.encode()) > IFNAME_MAX:
        raise InvalidNetworkConfig(f"vlan gateway interface name {name!r} is longer than "
                                   f"{IFNAME_MAX} bytes; use a shorter bridge name")
    existing = host.link_info(name)
    if existing is not None:
        return existing
    with host.current_netns_fd() as fd:
        veth = host.create_veth(name, fd, mtu=conf.mtu)
    rollback.push(f"delete vlan gateway {name}", _delete_unused_vlan_gateway, conf, name,
                  veth.peer_name, own_port)
    _setup_host_port(veth.peer_name, conf)
    host.set_link_up(name)
    return host.require_link(name)


def _configure_container(ifname: str, result: Result, enable_dad: bool, index: int) -> None:
    # Hairpin mode echoes the container's own neighbour solicitations back to it, which
    # fails DAD; unless enabledad asks for DAD (with enhanced_dad's nonce to tell its own
    # probes apart), it is off, as in the reference.
    if enable_dad:
        host.sysctl_try_set(f"net/ipv6/conf/{ifname}/enhanced_dad", "1")
        host.sysctl_try_set(f"net/ipv6/conf/{ifname}/accept_dad", "1")
    else:
        host.sysctl_try_set(f"net/ipv6/conf/{ifname}/accept_dad", "0")
    host.sysctl_try_set(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    host.configure_iface(ifname, result, index=index)


class Bridge(Plugin):
    """The ``bridge`` plugin."""

    type_name = "bridge"

    def add(self, args: CmdArgs) -> Result:
        conf = BridgeConfig.load(args)
        return run_with_rollback(args, lambda rollback: self._add(args, conf, rollback))

    def _add(self, args: CmdArgs, conf: BridgeConfig, rollback: host.Undo) -> Result:
        br = host.ensure_bridge(conf.bridge, mtu=conf.mtu, promisc=conf.promisc_mode,
                                vlan_filtering=bool(conf.vlan or conf.vlan_trunk),
                                undo=rollback)
        with enter_netns(args.netns) as ns:
            veth = create_container_veth(args, ns, rollback, mtu=conf.mtu, mac=conf.mac)
            _setup_host_port(veth.peer_name, conf, peer_index=veth.peer_index,
                             bridge_index=br.index)
            result = Result(interfaces=[
                Interface(name=br.name, mac=br.mac),
                Interface(name=veth.peer_name),
                Interface(name=args.ifname, mac=veth.mac, sandbox=args.netns),
            ])
            if conf.mac_spoof_check:
                rollback.push("remove the MAC spoof check", host.teardown_spoofcheck,
                              _spoof_id(args))
                host.setup_spoofcheck(veth.peer_name, veth.mac, _spoof_id(args))
            if conf.layer3:
                self._add_l3(args, conf, result, ns, rollback, index=veth.index,
                             bridge_index=br.index)
            elif not conf.disable_container_interface:
                ns.call(host.set_link_up, args.ifname, index=veth.index)
        if conf.disable_container_interface:
            peer = host.require_link(veth.peer_name)
        else:
            peer = host.wait_oper_up(veth.peer_name)
        result.interfaces[1].mac = peer.mac
        # The bridge's MAC may change when its first port joins or an address is set.
        result.interfaces[0].mac = host.require_link(conf.bridge).mac
        apply_dns(args, result)
        return result

    def _add_l3(self, args: CmdArgs, conf: BridgeConfig, result: Result, ns: host.NetNS,
                rollback: host.Undo, *, index: int, bridge_index: int) -> None:
        # Every address belongs to the container interface (index 2).
        ipam_into(args, conf.ipam_type, result, rollback, interface=2)
        gws = _gateways(result, conf)
        ns.call(_configure_container, args.ifname, result, conf.enable_dad, index)
        if conf.is_gateway:
            for family in (4, 6):
                if not gws[family]:
                    continue
                if conf.vlan:
                    target = _ensure_vlan_interface(conf, rollback, result.interfaces[1].name)
                    if all(i.name != target.name for i in result.interfaces):
                        result.interfaces.append(Interface(name=target.name, mac=target.mac))
                    target_name, target_index, mac = target.name, target.index, target.mac
                else:
                    # The MAC read when the bridge was ensured, before our port joined: writing
                    # it back keeps the bridge's MAC stable as ports come and go.
                    target_name, target_index = conf.bridge, bridge_index
                    mac = result.interfaces[0].mac
                for gw in gws[family]:
                    host.ensure_gateway_address(target_name, gw, force=conf.force_address,
                                                mac=mac, index=target_index)
                host.enable_forwarding(family)
        if conf.ip_masq:
            setup_masq(args, conf.ip_masq_backend, [ip.address for ip in result.ips], rollback)

    def delete(self, args: CmdArgs) -> None:
        # Only the keys that say what to remove are read, and leniently: ADD's rules
        # (hairpinMode with promiscMode, VLAN ranges, ...) cannot block a teardown.
        masq = bool(ipam_type(args, strict=False)) and teardown_flag(args, "ipMasq")
        addrs = delete_link_and_lease(args, addresses=masq)
        if teardown_flag(args, "macspoofchk"):
            host.teardown_spoofcheck(_spoof_id(args))
        if masq:
            # Rules are found by attachment identity, so a vanished netns (addrs None) still
            # gets its rules removed; the reference leaks them then (plugins#810).
            teardown_masq(args, teardown_masq_backend(args), addrs)

    def check(self, args: CmdArgs) -> None:
        conf = BridgeConfig.load(args, with_mac=False)
        if conf.layer3:
            ipam_check(args, conf.ipam_type)
        result = prev_result(args)
        br_if = next((i for i in result.interfaces if i.name == conf.bridge), None)
        br = host.link_info(conf.bridge)
        if br_if is None or br is None:
            raise KernelError(f"CHECK: bridge {conf.bridge!r} was not found")
        if br.kind != "bridge":
            raise KernelError(f"CHECK: {conf.bridge!r} is a {br.kind or 'non-bridge'} link, "
                              "expected a bridge")
        if br_if.mac and br_if.mac != br.mac:
            raise KernelError(f"CHECK: bridge {conf.bridge!r} has MAC {br.mac}, prevResult "
                              f"says {br_if.mac}")
        if br.promisc != conf.promisc_mode:
            raise KernelError(f"CHECK: bridge {conf.bridge!r} promiscuous mode is "
                              f"{br.promisc}, config wants {conf.promisc_mode}")
        with enter_netns(args.netns) as ns:
            cont = check_container(args, ns, result)
        self._check_host_veth(result, conf, br, cont)

    @staticmethod
    def _check_host_veth(result: Result, conf: BridgeConfig, br: host.LinkInfo,
                         cont: host.LinkInfo) -> None:
        for intf in result.interfaces:
            if intf.sandbox or intf.name == conf.bridge:
                continue
            link = host.link_info(intf.name)
            if link is None or link.kind != "veth":
                continue
            if (link.index, link.link_index, link.master) != (cont.link_index, cont.index,
                                                              br.index):
                continue
            if intf.mac and intf.mac != link.mac:
                raise KernelError(f"CHECK: host veth {intf.name!r} has MAC {link.mac}, "
                                  f"prevResult says {intf.mac}")
            return
        raise KernelError(f"CHECK: no veth on bridge {conf.bridge!r} is the peer of "
                          f"{cont.name!r}")

    def status(self, args: CmdArgs) -> None:
        conf = BridgeConfig.load(args, with_mac=False)
        problem = host.bridge_problem(conf.bridge)
        if problem is not None:
            raise PluginNotAvailable(f"bridge {conf.bridge!r} cannot be used", problem)
        if conf.layer3:
            ipam_status(args, conf.ipam_type)

    def gc(self, args: CmdArgs) -> None:
        ipam = ipam_type(args, strict=False)
        gc_attachments(args, ipam, masquerade=bool(ipam))


main = Bridge.main
