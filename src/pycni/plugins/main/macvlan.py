"""macvlan: the container gets its own MAC on a host interface (the "master").

Example config::

    {"cniVersion": "1.1.0", "name": "lan", "type": "macvlan", "master": "eth1",
     "mode": "bridge", "ipam": {"type": "host-local", "subnet": "192.168.10.0/24"}}

Keys: ``master`` (default: the interface of the default route, in the container's
namespace when ``linkInContainer`` is true), ``mode`` (bridge, private, vepa, passthru,
source; default bridge), ``mtu`` (0..the master's MTU), ``mac`` (overridden by
``runtimeConfig.mac``, ``args.cni.mac`` and CNI_ARGS ``MAC``), ``linkInContainer``,
``bcqueuelen`` (the broadcast/multicast receive queue the macvlans of one master share),
``ipam`` (optional: without it the link comes up with no addresses), ``dns``.
After the addresses are set a gratuitous ARP announces them (best effort), and the
kernel's ``arp_notify``/``ndisc_notify`` are on for the link.
"""

from __future__ import annotations

from ... import host
from ...skel import CmdArgs
from ...spec import InvalidNetworkConfig, KernelError
from .._fields import UINT32_MAX, int_field, str_default, str_field
from ._common import parse_mac, requested_mac
from ._linkplugin import LinkConf, SubLinkPlugin, load_parented


def _mode(args: CmdArgs) -> str:
    mode = str_default(args.conf.raw, "mode", "bridge")
    if mode not in host.MACVLAN_MODES:
        raise InvalidNetworkConfig(f"unknown macvlan mode: {mode!r} (expected one of "
                                   f"{', '.join(host.MACVLAN_MODES)})")
    return mode


def _mac(args: CmdArgs) -> str:
    """runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC > the config's ``mac``."""
    mac = requested_mac(args)
    if mac:
        return mac
    conf_mac = str_field(args.conf.raw, "mac")
    return parse_mac(conf_mac, '"mac"') if conf_mac else ""


class Macvlan(SubLinkPlugin):
    """The ``macvlan`` plugin."""

    type_name = "macvlan"
    kind = "macvlan"
    ipam_optional = True

    def load(self, args: CmdArgs, *, resolve: bool) -> LinkConf:
        bcqueuelen = int_field(args.conf.raw, "bcqueuelen", maximum=UINT32_MAX)
        return load_parented(args, "macvlan", resolve=resolve, announce=True,
                             mode=_mode(args), mac=_mac(args) if resolve else "",
                             bcqueuelen=bcqueuelen)

    def check_details(self, conf: LinkConf, details: host.LinkInfo) -> None:
        if details.mode != conf.link.mode:
            raise KernelError(f"CHECK: container macvlan mode {details.mode} does not match "
                              f"expected value: {conf.link.mode}")


main = Macvlan.main
