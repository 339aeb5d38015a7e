"""Every pycni plugin, by CNI type name; modules are imported only when a type is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..skel import Plugin

#: CNI type -> "module:class". The executable ``pycni install`` writes keeps the type name.
REGISTRY: dict[str, str] = {
    "loopback": "pycni.plugins.main.loopback:Loopback",
    "host-local": "pycni.plugins.ipam.host_local:HostLocal",
    "static": "pycni.plugins.ipam.static:Static",
    "dhcp": "pycni.plugins.ipam.dhcp:Dhcp",
    "bridge": "pycni.plugins.main.bridge:Bridge",
    "ptp": "pycni.plugins.main.ptp:PTP",
    "host-device": "pycni.plugins.main.host_device:HostDevice",
    "tap": "pycni.plugins.main.tap:Tap",
    "bandwidth": "pycni.plugins.meta.bandwidth:Bandwidth",
    "tuning": "pycni.plugins.meta.tuning:Tuning",
    "firewall": "pycni.plugins.meta.firewall:Firewall",
    "sbr": "pycni.plugins.meta.sbr:Sbr",
    "portmap": "pycni.plugins.meta.portmap:PortMap",
    "macvlan": "pycni.plugins.main.macvlan:Macvlan",
    "ipvlan": "pycni.plugins.main.ipvlan:IPVlan",
    "vlan": "pycni.plugins.main.vlan:Vlan",
    "dummy": "pycni.plugins.main.dummy:Dummy",
    "vrf": "pycni.plugins.main.vrf:VRF",
}


def load_plugin(type_name: str) -> type[Plugin] | None:
    """The plugin class for ``type_name``, or None if pycni has no such plugin."""
    target = REGISTRY.get(type_name)
    if target is None:
        return None
    module_name, _, class_name = target.partition(":")
    cls: type[Plugin] = getattr(importlib.import_module(module_name), class_name)
    return cls


def plugin_main(type_name: str) -> None:
    """Entry point used by installed executables: run ``type_name`` as a CNI plugin."""
    cls = load_plugin(type_name)
    if cls is None:
        raise SystemExit(f"pycni has no plugin of type {type_name!r}")
    cls.main()


__all__ = ["REGISTRY", "load_plugin", "plugin_main"]
