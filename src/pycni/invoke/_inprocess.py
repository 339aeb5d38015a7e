"""The registry of pycni's plugin types, and running one in this process.

The registry is plain data (type name -> "module:class"): a plugin module is imported only
when its type is used, through importlib, so this layer does not import the plugins (nor
skel, which runs them) and they can import it. It lies on the path of a standalone shim
call (:mod:`pycni.shim` runs with ``-IS``), so it imports nothing but ``importlib``.
"""

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, NoReturn

#: CNI type -> "module:class". The executable ``pycni install`` writes keeps the type name.
REGISTRY: "dict[str, str]" = {
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
    # the meta plugin for multi-network pods (it runs whole conflists as delegates)
    "multus": "pycni.multi._plugin:Multus",
}


#: What runs a plugin class for one call (env, stdin -> status, stdout). skel sits above
#: this layer (its delegation goes through it), so it is named here, not imported.
RUNNER = "pycni.skel:run_plugin_bytes"


def _resolve(target: str) -> "Any":
    """The object a "module:name" string names, importing the module if needed."""
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def load_plugin(type_name: str) -> "type[Any] | None":
    """The plugin class (a ``pycni.skel.Plugin``) for ``type_name``, or None if pycni has no
    such type."""
    target = REGISTRY.get(type_name)
    if target is None:
        return None
    cls: type[Any] = _resolve(target)
    return cls


def plugin_main(type_name: str) -> "NoReturn":
    """Entry point of an executable: run ``type_name`` as a CNI plugin on this process's
    environment, stdin and stdout, and exit."""
    cls = load_plugin(type_name)
    if cls is None:
        raise SystemExit(f"pycni has no plugin of type {type_name!r}")
    cls.main()
    raise SystemExit(0)  # not reached: Plugin.main exits


def run_in_process(plugin_type: str, environ: "Mapping[str, str]", stdin: bytes, *,
                   source: str = "", chain: str = "") -> "tuple[int, bytes]":
    """Run one call of ``plugin_type`` here: (exit status, stdout), as the executable would.

    ``environ`` carries the CNI_* variables. PluginNotFound if pycni has no such type. The
    call is traced (:mod:`pycni.invoke._trace`) with ``source`` and ``chain`` when given.
    """
    cls = load_plugin(plugin_type)
    if cls is None:
        from ..spec import PluginNotFound

        raise PluginNotFound(f"pycni has no plugin of type {plugin_type!r}")
    from ._trace import traced

    def run() -> "tuple[int, bytes]":
        result: tuple[int, bytes] = _resolve(RUNNER)(cls(), environ, stdin)
        return result

    return traced(run, plugin_type, environ, stdin, source=source, chain=chain)
