"""ptp: a point-to-point veth between the container and the host, routed (no bridge).

Example config::

    {"cniVersion": "1.1.0", "name": "mynet", "type": "ptp", "ipMasq": true, "mtu": 1450,
     "ipam": {"type": "host-local", "subnet": "10.1.1.0/24"}}

For an IPAM answer of 10.1.1.5/24 with gateway 10.1.1.1 the container gets 10.1.1.5/24 on
its interface, but the kernel's subnet route is replaced by ``10.1.1.1/32 dev eth0 scope
link`` and ``10.1.1.0/24 via 10.1.1.1``: everything goes through the host, which answers ARP
for the gateway. The host end carries the gateway as a /32 (/128) and a host route to the
container's address. IPv6 works the same way.

Keys: ``ipMasq``, ``ipMasqBackend``, ``mtu``, ``ipam`` (required), ``dns``.
Unlike the reference, a failed ADD removes the veth and masquerade rules as well as the
lease, and DEL removes masquerade rules even when the netns is already gone.
"""

from __future__ import annotations

import ipaddress

from ... import host
from ..._record import FrozenRecord, set_fields
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import Interface, InvalidNetworkConfig, KernelError, Result, bool_field
from .._fields import mtu_field
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
    run_with_rollback,
    setup_masq,
    teardown_flag,
    teardown_masq,
    teardown_masq_backend,
)


class PTPConfig(FrozenRecord):
    """The ptp plugin's keys."""

    __slots__ = ("ip_masq", "ip_masq_backend", "ipam_type", "mtu")
    ip_masq: bool
    ip_masq_backend: str | None
    mtu: int
    ipam_type: str

    def __init__(self, ip_masq: bool = False, ip_masq_backend: str | None = None, mtu: int = 0,
                 ipam_type: str = "") -> None:
        set_fields(self, ip_masq, ip_masq_backend, mtu, ipam_type)

    @classmethod
    def load(cls, args: CmdArgs) -> PTPConfig:
        """Read and validate the keys; ptp needs IPAM."""
        raw = args.conf.raw
        conf = cls(ip_masq=bool_field(raw, "ipMasq"), ip_masq_backend=masq_backend(args),
                   mtu=mtu_field(raw) or 0, ipam_type=ipam_type(args))
        if not conf.ipam_type:
            raise InvalidNetworkConfig('ptp needs "ipam" with a "type"')
        return conf


def _configure_container(ifname: str, result: Result) -> None:
    """Addresses and the point-to-point routes inside the container (see module docstring)."""
    host.configure_iface(ifname, result)
    for ipc in result.ips:
        if ipc.gateway is None:
            raise KernelError(f"ptp: IPAM gave {ipc.address} no gateway; ptp routes every "
                              "address through its gateway")
        net = ipc.address.network
        host.del_route(net, ifname=ifname)
        bits = 32 if ipc.family == 4 else 128
        gw_net = ipaddress.ip_network(f"{ipc.gateway}/{bits}")
        host.add_route(gw_net, ifname=ifname, scope=host.RT_SCOPE_LINK, src=ipc.address.ip)
        host.add_route(net, ifname=ifname, gateway=ipc.gateway, src=ipc.address.ip,
                       scope=host.RT_SCOPE_UNIVERSE)


def _configure_host_veth(name: str, result: Result) -> None:
    """The host end: each gateway as a /32 (/128), and a host route to each container IP."""
    for ipc in result.ips:
        bits = 32 if ipc.family == 4 else 128
        host.add_address(name, ipaddress.ip_interface(f"{ipc.gateway}/{bits}"))
        host.add_route(ipaddress.ip_network(f"{ipc.address.ip}/{bits}"), ifname=name,
                       scope=host.RT_SCOPE_HOST, exist_ok=True)


class PTP(Plugin):
    """The ``ptp`` plugin."""

    type_name = "ptp"

    def add(self, args: CmdArgs) -> Result:
        conf = PTPConfig.load(args)
        return run_with_rollback(args, lambda rollback: self._add(args, conf, rollback))

    def _add(self, args: CmdArgs, conf: PTPConfig, rollback: host.Undo) -> Result:
        # Every address belongs to the container end of the veth (index 1).
        result = Result()
        ipam_into(args, conf.ipam_type, result, rollback, interface=1)
        for family in sorted({ip.family for ip in result.ips}):
            host.enable_forwarding(family)
        with enter_netns(args.netns) as ns:
            veth = create_container_veth(args, ns, rollback, mtu=conf.mtu)
            host.set_link_up(veth.peer_name)
            host.sysctl_try_set(f"net/ipv6/conf/{veth.peer_name}/accept_ra", "0")
            peer = host.require_link(veth.peer_name)
            result.interfaces = [
                Interface(name=peer.name, mac=peer.mac),
                Interface(name=args.ifname, mac=veth.mac, sandbox=args.netns),
            ]
            ns.call(_configure_container, args.ifname, result)
        _configure_host_veth(veth.peer_name, result)
        if conf.ip_masq:
            setup_masq(args, conf.ip_masq_backend, [ip.address for ip in result.ips], rollback)
        apply_dns(args, result)
        return result

    def delete(self, args: CmdArgs) -> None:
        # ADD's rules (ptp needs an IPAM type) do not apply: without one there is no lease.
        masq = teardown_flag(args, "ipMasq")
        addrs = delete_link_and_lease(args, addresses=masq)
        if masq:
            # Found by attachment identity: no netns, no problem (the reference leaks them).
            teardown_masq(args, teardown_masq_backend(args), addrs)

    def check(self, args: CmdArgs) -> None:
        conf = PTPConfig.load(args)
        ipam_check(args, conf.ipam_type)
        result = prev_result(args)
        with enter_netns(args.netns) as ns:
            check_container(args, ns, result)

    def status(self, args: CmdArgs) -> None:
        ipam_status(args, PTPConfig.load(args).ipam_type)

    def gc(self, args: CmdArgs) -> None:
        gc_attachments(args, ipam_type(args, strict=False), masquerade=True)


main = PTP.main
