"""loopback: bring ``lo`` up in the container's network namespace.

Example config::

    {"cniVersion": "1.1.0", "name": "lo", "type": "loopback"}

ADD sets the interface up and reports its addresses (127.0.0.1/8 and ::1/128 when present);
when chained behind another plugin it passes ``prevResult`` through unchanged, like the
reference plugin. DEL sets it down and succeeds if the namespace is already gone.
"""

from __future__ import annotations

import ipaddress

from ...host import NetNSNotFound, links
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import Interface, IPConfig, Result, UnknownContainer


def _up_and_addresses(ifname: str) -> list[str]:
    links.set_up(ifname)
    return [a for a in links.addresses(ifname) if ipaddress.ip_interface(a).ip.is_loopback]


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
                ns.call(links.set_down, args.ifname, missing_ok=True)
        except NetNSNotFound:
            return

    def check(self, args: CmdArgs) -> None:
        with enter_netns(args.netns) as ns:
            up = ns.call(links.is_up, args.ifname)
        if not up:
            raise UnknownContainer(f"loopback interface {args.ifname!r} is down")


main = Loopback.main
