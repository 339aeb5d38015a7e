"""pycni's built-in network, used when the configuration directory has none.

Like podman's default ``podman`` network: a bridge with the node as gateway, masquerade for
traffic leaving the subnet, and host-local addresses::

    {"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "pycni",
     "plugins": [{"type": "bridge", "bridge": "pycni0", "isGateway": true, "ipMasq": true,
                  "ipMasqBackend": "nftables", "hairpinMode": true,
                  "ipam": {"type": "host-local", "dataDir": "/var/lib/cni/networks",
                           "ranges": [[{"subnet": "10.99.0.0/16"}]],
                           "routes": [{"dst": "0.0.0.0/0"}]}},
                 {"type": "portmap", "capabilities": {"portMappings": true}}]}

``cniVersions`` lets the runtime settle on the highest version the installed plugins speak
(pycni's speak 1.1.0, the Go reference plugins 1.0.0).
"""

from __future__ import annotations

import json
from typing import Any

from ..spec import NetworkConfigList

DEFAULT_NETWORK_NAME = "pycni"
DEFAULT_BRIDGE = "pycni0"
DEFAULT_SUBNET = "10.99.0.0/16"
DEFAULT_DATA_DIR = "/var/lib/cni/networks"


def builtin_conflist(
    *,
    name: str = DEFAULT_NETWORK_NAME,
    bridge: str = DEFAULT_BRIDGE,
    subnet: str = DEFAULT_SUBNET,
    data_dir: str = DEFAULT_DATA_DIR,
) -> dict[str, Any]:
    """The built-in network as a conflist object (see the module docstring)."""
    return {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                # pycni's bridge masquerades through nftables; Go's ignores the key (iptables).
                "ipMasqBackend": "nftables",
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": data_dir,
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            # Published ports; with no mappings it does no netfilter work at all.
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def builtin_network(**kwargs: Any) -> NetworkConfigList:
    """The built-in network, parsed; keyword arguments as for :func:`builtin_conflist`."""
    return NetworkConfigList.parse(json.dumps(builtin_conflist(**kwargs), indent=2).encode())
