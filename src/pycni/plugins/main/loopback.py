"""loopback: bring ``lo`` up in the container's network namespace.

Example config::

    {"cniVersion": "1.1.0", "name": "lo", "type": "loopback"}

ADD sets the interface up and reports its addresses (127.0.0.1/8 and ::1/128 when present);
when chained behind another plugin it passes ``prevResult`` through unchanged, like the
reference plugin. DEL sets it down and succeeds if the namespace is already gone.
"""

from __future__ import annotations

import ipaddress

from ... import host
from ...host import NetNSNotFound
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import Interface, IPConfig, Result, UnknownContainer


def _up_and_addresses(ifname: str) -> list[str]:
    host.set_link_up(ifname)
    found = sorted(host.list_addresses(ifname), key=lambda a: a.address.version)
    return [str(a.address) for a in found if a.address.ip.is_loopback]


class Loopback(Plugin):
    """The ``loopback`` plugin."""

    type_name = "loopback"

    def add(self, args: CmdArgs) -> Result:
        with enter_netns(args.netns) as ns:
            addrs = ns.call(_up_and_addresses, args.ifname)
        if args.conf.prev_result is not None:
            return args.conf.prev_result
        result = Result(interfaces=[Interface(name=args.ifname, mac="00:00:00:00:00:00",
                                              sandbox=args.netns)])
        for family in (4, 6):
            first = next((a for a in addrs if ipaddress.ip_interface(a).version == family), None)
            if first is not None:
                result.ips.append(IPConfig(address=ipaddress.ip_interface(first), interface=0))
        return result

    def delete(self, args: CmdArgs) -> None:
        if not args.netns:
            return
        try:
            with enter_netns(args.netns) as ns:
                ns.call(host.set_link_down, args.ifname, missing_ok=True)
        except NetNSNotFound:
            return

    def check(self, args: CmdArgs) -> None:
        with enter_netns(args.netns) as ns:
            link = ns.call(host.link_info, args.ifname)
        if link is None or not link.up:
            raise UnknownContainer(f"loopback interface {args.ifname!r} is down")


main = Loopback.main
