"""vlan: an 802.1Q sub-interface of a host interface (the "master") for the container.

Example config::

    {"cniVersion": "1.1.0", "name": "vlan100", "type": "vlan", "master": "eth0",
     "vlanId": 100, "mtu": 1500, "ipam": {"type": "host-local", "subnet": "10.1.100.0/24"}}

Keys: ``master`` (required), ``vlanId`` (0-4094), ``mtu`` (0..the master's MTU),
``linkInContainer`` (the master is in the container's namespace), ``ipam`` (required),
``dns``. Needs the kernel's 8021q module.
"""

from __future__ import annotations

from ... import host
from ...skel import CmdArgs
from ...spec import InvalidNetworkConfig, KernelError
from ._linkplugin import LinkConf, SubLinkPlugin, load_parented


def _vlan_id(args: CmdArgs) -> int:
    value = args.conf.raw.get("vlanId", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4094:
        raise InvalidNetworkConfig(f"invalid VLAN ID {value!r} (must be between 0 and 4094 "
                                   "inclusive)")
    return value


class Vlan(SubLinkPlugin):
    """The ``vlan`` plugin."""

    type_name = "vlan"
    kind = "vlan"

    def load(self, args: CmdArgs, *, resolve: bool) -> LinkConf:
        if not args.conf.raw.get("master"):
            raise InvalidNetworkConfig('"master" field is required. It specifies the host '
                                       "interface name to create the VLAN for")
        return load_parented(args, "vlan", resolve=resolve, vlan_id=_vlan_id(args))

    def check_details(self, conf: LinkConf, details: host.LinkInfo) -> None:
        if details.vlan_id != conf.link.vlan_id:
            raise KernelError(f"CHECK: container vlan has VLAN ID {details.vlan_id}, config "
                              f"says {conf.link.vlan_id}")
        if conf.link.mtu and details.mtu != conf.link.mtu:
            raise KernelError(f"CHECK: container vlan has MTU {details.mtu}, config says "
                              f"{conf.link.mtu}")


main = Vlan.main
