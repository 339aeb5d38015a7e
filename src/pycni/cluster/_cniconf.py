"""The node's CNI config: bridge + host-local on the node's subnets + portmap, or a template.

The file appears only once the node has its subnets and its backend is set up, so a runtime
never picks a config whose pods could not reach the rest of the cluster (flannel#2253); it is
replaced atomically when the subnets change, and removed when the agent is uninstalled
(a runtime then reports "no network config" rather than calling a plugin that cannot work,
Multus#1312).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from ..spec import CNIError, InvalidNetworkConfig, IOFailure, NetworkConfigList
from ..store import atomic_write
from ._base import Subnet
from ._config import ClusterConfig, check_template

#: The CNI version the built-in config speaks.
CNI_VERSION = "1.0.0"


def render_conflist(config: ClusterConfig, subnets: tuple[Subnet, ...], mtu: int) -> bytes:
    """The node's conflist as bytes (validated as a CNI network configuration list)."""
    if config.cni_template is not None:
        text = check_template(config.cni_template)
        values = {
            "@SUBNET4@": next((str(s) for s in subnets if s.version == 4), None),
            "@SUBNET6@": next((str(s) for s in subnets if s.version == 6), None),
            "@MTU@": str(mtu),
            "@NODE@": config.node_name,
            "@CLUSTER_CIDR@": ",".join(str(c) for c in config.cluster_cidrs) or None,
        }
        for mark, value in values.items():
            if mark in text:
                if value is None:
                    raise InvalidNetworkConfig(
                        f'invalid "cniTemplate": it uses {mark} but the node has no such '
                        "value (no subnet of that family, or no clusterCIDR)")
                text = text.replace(mark, value)
        data = text.encode()
    else:
        data = json.dumps(_builtin(config, subnets, mtu), indent=2).encode() + b"\n"
    try:
        NetworkConfigList.parse(data)
    except CNIError as exc:
        raise InvalidNetworkConfig(f"the node's CNI config for {config.network_name!r} is "
                                   f"not valid: {exc}") from exc
    return data


def _builtin(config: ClusterConfig, subnets: tuple[Subnet, ...], mtu: int) -> dict[str, Any]:
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": str(s)}] for s in subnets],
        "routes": [{"dst": "0.0.0.0/0" if s.version == 4 else "::/0"} for s in subnets],
    }
    if config.ipam_data_dir:
        ipam["dataDir"] = config.ipam_data_dir
    return {
        "cniVersion": CNI_VERSION,
        "name": config.network_name,
        "plugins": [
            {"type": "bridge", "bridge": config.bridge, "isGateway": True, "ipMasq": False,
             "hairpinMode": True, "mtu": mtu, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def write_conflist(config: ClusterConfig, data: bytes) -> bool:
    """Write the node's conflist atomically unless it already holds ``data``; True if written."""
    path = config.conf_path
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return False
    try:
        atomic_write(path, data, mode=0o644, dir_mode=0o755)
    except OSError as exc:
        raise IOFailure(f"cannot write the node's CNI config {path}: {exc.strerror}") from exc
    return True


def remove_conflist(config: ClusterConfig) -> bool:
    """Remove the node's conflist; True if it was there."""
    try:
        config.conf_path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise IOFailure(f"cannot remove the node's CNI config {config.conf_path}: "
                       f"{exc.strerror}") from exc
    return True


__all__ = ["CNI_VERSION", "remove_conflist", "render_conflist", "write_conflist"]
