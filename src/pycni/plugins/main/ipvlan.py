"""ipvlan: the container shares the MAC of a host interface (the "master"), routed by IP.

Example config::

    {"cniVersion": "1.1.0", "name": "lan", "type": "ipvlan", "master": "eth1",
     "mode": "l2", "ipam": {"type": "host-local", "subnet": "192.168.10.0/24"}}

Keys: ``master`` (default: when chained, the one interface of prevResult; otherwise the
interface of the default route, looked up in the container's namespace when
``linkInContainer`` is true), ``mode`` (l2, l3, l3s; default l2), ``mtu`` (0..the master's
MTU), ``linkInContainer``, ``ipam``, ``dns``. Chained after another plugin without
``ipam``, it takes the addresses of prevResult instead of running IPAM.
"""

from __future__ import annotations

from ... import host
from ...skel import CmdArgs
from ...spec import InvalidNetworkConfig, KernelError
from .._fields import str_default, str_field
from ._linkplugin import LinkConf, SubLinkPlugin, load_parented


def _mode(args: CmdArgs) -> str:
    mode = str_default(args.conf.raw, "mode", "l2")
    if mode not in host.IPVLAN_MODES:
        raise InvalidNetworkConfig(f"unknown ipvlan mode: {mode!r} (expected l2, l3 or l3s)")
    return mode


def _chained_master(args: CmdArgs) -> str:
    """The master a chained ipvlan takes from prevResult: its single named interface."""
    prev = args.conf.prev_result
    if prev is None or str_field(args.conf.raw, "master"):
        return ""
    if len(prev.interfaces) == 1 and prev.interfaces[0].name:
        return prev.interfaces[0].name
    raise InvalidNetworkConfig("ipvlan: chained master failure: prevResult lacks a single "
                               "named interface (set \"master\")")


class IPVlan(SubLinkPlugin):
    """The ``ipvlan`` plugin."""

    type_name = "ipvlan"
    kind = "ipvlan"

    def load(self, args: CmdArgs, *, resolve: bool) -> LinkConf:
        return load_parented(args, "ipvlan", resolve=resolve, mode=_mode(args),
                             default_master=_chained_master(args) if resolve else "",
                             prev=args.conf.prev_result, announce=True)

    def check_details(self, conf: LinkConf, details: host.LinkInfo) -> None:
        if details.mode != conf.link.mode:
            raise KernelError(f"CHECK: container ipvlan mode {details.mode or 'unknown'} does "
                              f"not match expected value: {conf.link.mode}")


main = IPVlan.main
