"""tap: create a persistent tap device in the container (for a VM or userspace switch there).

Example config::

    {"cniVersion": "1.1.0", "name": "vmnet", "type": "tap", "multiQueue": true,
     "mtu": 1400, "owner": 107, "group": 107, "bridge": "br0",
     "ipam": {"type": "host-local", "subnet": "10.10.0.0/24"}}

Keys: ``mac`` (also ``MAC`` in CNI_ARGS and ``runtimeConfig.mac``, which win in that order,
as in the reference), ``mtu``, ``multiQueue``, ``owner`` and ``group`` (uid/gid allowed to
attach; absent: anyone with CAP_NET_ADMIN), ``bridge`` (a bridge *inside the container*
that the tap becomes a port of, as in the reference), ``selinuxContext`` (create the device
under that SELinux context; an error when SELinux is off), ``ipam`` (optional: without it
the tap is L2 only). The tap is created with ``CNI_IFNAME`` in the container, set up, and
with IPAM gets the addresses and routes (and ``arp_notify`` on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import host
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import Interface, Result, bool_field
from .._fields import UINT32_MAX, ifname_field, int_field, mtu_field, str_default
from ._common import (
    apply_dns,
    check_container,
    delete_link_and_lease,
    gc_attachments,
    ipam_check,
    ipam_into,
    ipam_status,
    ipam_type,
    parse_mac,
    prev_result,
    run_with_rollback,
)


def _id_field(raw: dict[str, Any], key: str) -> int | None:
    """A uid/gid: an integer that fits the kernel's 32 bits."""
    return int_field(raw, key, maximum=UINT32_MAX)


@dataclass(frozen=True)
class TapConfig:
    """The tap plugin's keys."""

    mac: str = ""
    mtu: int = 0
    multi_queue: bool = False
    owner: int | None = None
    group: int | None = None
    bridge: str = ""
    selinux_context: str = ""
    ipam_type: str = ""

    @classmethod
    def load(cls, args: CmdArgs) -> TapConfig:
        """Read and validate the keys; the MAC may come from three places (see module doc)."""
        raw = args.conf.raw
        mac, where = str_default(raw, "mac", ""), '"mac"'
        env_mac = args.cni_args(["MAC"]).get("MAC", "")
        if env_mac:
            mac, where = env_mac, "CNI_ARGS MAC"
        rt_mac = args.conf.runtime_config.get("mac")
        if rt_mac:
            mac, where = rt_mac, "runtimeConfig.mac"
        return cls(mac=parse_mac(mac, where) if mac else "",
                   mtu=mtu_field(raw) or 0,
                   multi_queue=bool_field(raw, "multiQueue"),
                   owner=_id_field(raw, "owner"), group=_id_field(raw, "group"),
                   bridge=ifname_field(raw, "bridge") or "",
                   selinux_context=str_default(raw, "selinuxContext", ""),
                   ipam_type=ipam_type(args))


def _create(conf: TapConfig, ifname: str) -> host.LinkInfo:
    """In the container: the tap, its MTU/MAC/bridge, up."""
    if conf.selinux_context:
        host.create_tap_labelled(ifname, conf.selinux_context, multi_queue=conf.multi_queue,
                                owner=conf.owner, group=conf.group)
    else:
        host.create_tap(ifname, multi_queue=conf.multi_queue, owner=conf.owner,
                       group=conf.group)
    try:
        host.configure_tap(ifname, mtu=conf.mtu, mac=conf.mac, bridge=conf.bridge)
        return host.require_link(ifname)
    except BaseException:
        host.delete_link(ifname)
        raise


def _configure_l3(ifname: str, result: Result) -> None:
    # Announce the new address to the segment, as the reference does for taps.
    host.sysctl_try_set(f"net/ipv4/conf/{ifname}/arp_notify", "1")
    host.configure_iface(ifname, result)


class Tap(Plugin):
    """The ``tap`` plugin."""

    type_name = "tap"

    def add(self, args: CmdArgs) -> Result:
        conf = TapConfig.load(args)
        return run_with_rollback(args, lambda rollback: self._add(args, conf, rollback))

    def _add(self, args: CmdArgs, conf: TapConfig, rollback: host.Undo) -> Result:
        with enter_netns(args.netns) as ns:
            link = ns.call(_create, conf, args.ifname)
            rollback.push(f"delete {args.ifname} in {args.netns}", host.run_in_netns,
                          args.netns, host.delete_link, args.ifname)
            result = Result(interfaces=[Interface(name=args.ifname, mac=link.mac,
                                                  sandbox=args.netns)])
            if conf.ipam_type:
                ipam_into(args, conf.ipam_type, result, rollback)
                ns.call(_configure_l3, args.ifname, result)
        apply_dns(args, result)
        return result

    def delete(self, args: CmdArgs) -> None:
        # MAC, owner and MTU rules are ADD's: the tap and the lease are found without them.
        delete_link_and_lease(args)

    def check(self, args: CmdArgs) -> None:
        conf = TapConfig.load(args)
        if conf.ipam_type:
            ipam_check(args, conf.ipam_type)
        result = prev_result(args)
        with enter_netns(args.netns) as ns:
            check_container(args, ns, result, kind="tun")

    def status(self, args: CmdArgs) -> None:
        conf = TapConfig.load(args)
        if conf.ipam_type:
            ipam_status(args, conf.ipam_type)

    def gc(self, args: CmdArgs) -> None:
        gc_attachments(args, ipam_type(args, strict=False), masquerade=False)


main = Tap.main
