"""What macvlan, ipvlan, vlan and dummy share: one link per container, IPAM, the result.

Each plugin creates a single link of its kind for the container. A link with a parent
(macvlan, ipvlan, vlan) is created in the namespace of its parent, the "master": the host
namespace, or the container's when ``linkInContainer`` is true. It is born in the
container under a random temporary name, renamed to ``CNI_IFNAME`` there, then gets the
IPAM addresses (or just goes up when there is no IPAM, for the plugins that allow that).

A failed ADD removes the link and releases the lease; DEL removes the link (a gone netns
or link is success) and always releases the lease; CHECK compares the link's kind, mode,
parent, MAC, addresses and routes with prevResult; STATUS reports code 50 naming the master
when it is missing or down; GC is the IPAM plugin's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ... import host
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import (
    Interface,
    InvalidNetworkConfig,
    KernelError,
    PluginNotAvailable,
    Result,
    bool_field,
)
from .._fields import ifname_field, mtu_field
from ._common import (
    apply_dns,
    delete_link_and_lease,
    gc_attachments,
    ipam_check,
    ipam_into,
    ipam_status,
    ipam_type,
    prev_result,
    run_with_rollback,
)


@dataclass(frozen=True)
class LinkConf:
    """One plugin's config, reduced to what the shared steps need.

    ``link.parent`` is the resolved master ("" for dummy, or before resolution).
    ``prev`` holds prevResult addresses that a chained ipvlan uses instead of IPAM.
    """

    link: host.SubLink
    in_container: bool = False
    ipam_type: str = ""
    prev: Result | None = None
    announce: bool = False


def master_fields(args: CmdArgs) -> tuple[str, int, bool]:
    """``master``, ``mtu`` and ``linkInContainer``, validated but not looked up."""
    raw = args.conf.raw
    master = ifname_field(raw, "master") or ""
    mtu = mtu_field(raw) or 0
    return master, mtu, bool_field(raw, "linkInContainer")


def _in_master_ns(args: CmdArgs, in_container: bool, fn: Callable[..., Any], *a: Any) -> Any:
    """Run ``fn`` where the master lives: here, or in the container's namespace."""
    if in_container:
        return host.run_in_netns(args.netns, fn, *a)
    return fn(*a)


def _where(in_container: bool) -> str:
    return "the container namespace" if in_container else "the host namespace"


def resolve_master(args: CmdArgs, kind: str, master: str, in_container: bool, mtu: int) -> str:
    """The master to use (the default route's interface when unset), checked to exist and
    to allow ``mtu``; InvalidNetworkConfig naming it otherwise."""
    if not master:
        master = _in_master_ns(args, in_container, host.default_route_interface) or ""
        if not master:
            raise InvalidNetworkConfig(f'{kind}: no "master" given and no default route in '
                                       f"{_where(in_container)} to take it from")
    info = _in_master_ns(args, in_container, host.link_info, master)
    if info is None:
        raise InvalidNetworkConfig(f'{kind}: master "{master}" does not exist in '
                                   f"{_where(in_container)}")
    if mtu > info.mtu:
        raise InvalidNetworkConfig(f"invalid MTU {mtu}, must be [0, master MTU({info.mtu})]")
    return master


class SubLinkPlugin(Plugin):
    """ADD/DEL/CHECK/STATUS/GC for a plugin that makes one link per container.

    Subclasses set ``kind`` and implement :meth:`load`; ``resolve`` says whether the
    master must be looked up (ADD, CHECK) or only read (DEL, STATUS, GC).
    """

    kind: ClassVar[str] = ""
    #: The plugin runs without IPAM (an L2-only attachment; macvlan).
    ipam_optional: ClassVar[bool] = False

    def load(self, args: CmdArgs, *, resolve: bool) -> LinkConf:
        """The plugin's config; subclasses read their keys."""
        raise NotImplementedError

    def check_details(self, conf: LinkConf, details: host.LinkInfo) -> None:
        """CHECK of kind-specific state (mode, VLAN ID); the default checks nothing."""

    def require_ipam(self, conf: LinkConf) -> None:
        """ADD needs an IPAM type unless the plugin allows none or prevResult has addresses."""
        if conf.ipam_type or self.ipam_optional or (conf.prev and conf.prev.ips):
            return
        raise InvalidNetworkConfig(f'{self.kind} needs "ipam" with a "type"')

    # --- ADD --------------------------------------------------------------------------

    def add(self, args: CmdArgs) -> Result:
        conf = self.load(args, resolve=True)
        self.require_ipam(conf)
        return run_with_rollback(args, lambda rollback: self._add(args, conf, rollback))

    def _create(self, args: CmdArgs, conf: LinkConf, ns: host.NetNS) -> str:
        """The new link's temporary name, already in the container."""
        if conf.in_container or not conf.link.parent:
            name: str = ns.call(host.create_sublink, conf.link)
            return name
        fd = host.open_netns(args.netns)
        try:
            return host.create_sublink(conf.link, fd)
        finally:
            os.close(fd)

    def _add(self, args: CmdArgs, conf: LinkConf, rollback: host.Undo) -> Result:
        with enter_netns(args.netns) as ns:
            tmp = self._create(args, conf, ns)
            mac = ns.call(host.adopt_link, tmp, args.ifname)
            rollback.push(f"delete {args.ifname} in {args.netns}", host.run_in_netns,
                          args.netns, host.delete_link, args.ifname)
            if conf.link.bcqueuelen is not None:
                ns.call(host.set_macvlan_bcqueuelen, args.ifname, conf.link.bcqueuelen)
            result = Result(interfaces=[Interface(name=args.ifname, mac=mac,
                                                  sandbox=args.netns)])
            if conf.ipam_type:
                ipam_into(args, conf.ipam_type, result, rollback)
            elif conf.prev is not None and conf.prev.ips:
                result.ips, result.routes, result.dns = (conf.prev.ips, conf.prev.routes,
                                                         conf.prev.dns)
                for ipc in result.ips:
                    ipc.interface = 0
            if result.ips:
                ns.call(host.configure_iface, args.ifname, result)
                if conf.announce:
                    ns.call(host.announce_addresses, args.ifname,
                            [ipc.address.ip for ipc in result.ips])
            else:
                ns.call(host.set_link_up, args.ifname)
        apply_dns(args, result)
        return result

    # --- DEL, CHECK, STATUS, GC -------------------------------------------------------

    def delete(self, args: CmdArgs) -> None:
        # The link is CNI_IFNAME in the netns and the lease is IPAM's: the plugin's own keys
        # (master, mode, VLAN ID, MTU) are ADD's business and cannot block a teardown.
        delete_link_and_lease(args)

    def check(self, args: CmdArgs) -> None:
        conf = self.load(args, resolve=True)
        if conf.ipam_type:
            ipam_check(args, conf.ipam_type)
        result = prev_result(args)
        cont_if = next((i for i in result.interfaces
                        if i.name == args.ifname and i.sandbox == args.netns), None)
        if cont_if is None:
            raise KernelError(f"CHECK: prevResult has no interface {args.ifname!r} in "
                              f"sandbox {args.netns!r}")
        master_index = None
        if conf.link.parent:
            master = _in_master_ns(args, conf.in_container, host.link_info, conf.link.parent)
            master_index = master.index if master is not None else None
        with enter_netns(args.netns) as ns:
            details = ns.call(host.link_info, args.ifname)
            if details is None:
                raise KernelError(f"CHECK: container interface {args.ifname!r} not found")
            if details.kind != self.kind:
                raise KernelError(f"CHECK: container interface {args.ifname!r} is of kind "
                                  f"{details.kind or 'unknown'!r}, not {self.kind}")
            if cont_if.mac and cont_if.mac != details.mac:
                raise KernelError(f"CHECK: {args.ifname!r} has MAC {details.mac}, prevResult "
                                  f"says {cont_if.mac}")
            if master_index is not None and details.link_index != master_index:
                raise KernelError(f"CHECK: {args.ifname!r} is not on master "
                                  f"{conf.link.parent!r}")
            self.check_details(conf, details)
            ns.call(host.check_iface_ips, args.ifname, result)
            ns.call(host.check_routes, result)

    def status(self, args: CmdArgs) -> None:
        conf = self.load(args, resolve=False)
        if self.kind != "dummy" and not conf.in_container:
            # linkInContainer: the master is in a container STATUS knows nothing about.
            master = conf.link.parent or host.default_route_interface()
            if not master:
                raise PluginNotAvailable(f'{self.kind}: no "master" given and no default '
                                         "route interface to use")
            info = host.link_info(master)
            if info is None:
                raise PluginNotAvailable(f'{self.kind}: master "{master}" does not exist')
            if not info.up:
                raise PluginNotAvailable(f'{self.kind}: master "{master}" is down')
        if conf.ipam_type:
            ipam_status(args, conf.ipam_type)

    def gc(self, args: CmdArgs) -> None:
        gc_attachments(args, ipam_type(args, strict=False), masquerade=False)


def load_parented(args: CmdArgs, kind: str, *, resolve: bool, default_master: str = "",
                  announce: bool = False, prev: Result | None = None, **link: Any) -> LinkConf:
    """The shared part of macvlan/ipvlan/vlan configs: master, mtu, linkInContainer, IPAM.

    ``default_master`` is used when the config has no ``master`` (before the default
    route's interface); ``link`` holds the kind-specific
    :class:`~pycni.host.SubLink` fields.
    """
    master, mtu, in_container = master_fields(args)
    master = master or default_master
    if resolve:
        master = resolve_master(args, kind, master, in_container, mtu)
    return LinkConf(link=host.SubLink(kind=kind, parent=master, mtu=mtu, **link),
                    in_container=in_container, ipam_type=ipam_type(args), prev=prev,
                    announce=announce)
