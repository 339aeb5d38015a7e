"""Device IDs the kubelet allocated to a pod, from its device-manager checkpoint.

A NAD annotated ``k8s.v1.cni.cncf.io/resourceName: intel.com/sriov`` asks for one of the
pod's devices of that resource (an SR-IOV VF's PCI address); the kubelet records what it gave
each pod in ``/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint``::

    {"Data": {"PodDeviceEntries": [{"PodUID": "...", "ContainerName": "app",
       "ResourceName": "intel.com/sriov", "DeviceIDs": {"-1": ["0000:03:02.0"]}}]}, ...}

(``DeviceIDs`` is keyed by NUMA node since Kubernetes 1.20; older kubelets write a list.)
Each attachment of the same resource gets the next device, in the order of the IDs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._json import loads
from ..spec import InvalidNetworkConfig

KUBELET_CHECKPOINT = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"


def _ids(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [str(v) for key in sorted(value) for v in value[key] or []]
    return []


class DeviceAllocator:
    """Hands out a pod's devices per resource, each once."""

    def __init__(self, pod_uid: str, checkpoint: str = KUBELET_CHECKPOINT) -> None:
        self.pod_uid = pod_uid
        self.checkpoint = checkpoint
        self._free: dict[str, list[str]] | None = None

    def _load(self) -> dict[str, list[str]]:
        try:
            data = loads(Path(self.checkpoint).read_bytes())
        except OSError as exc:
            raise InvalidNetworkConfig(
                f"cannot read the kubelet's device checkpoint {self.checkpoint}: "
                f"{exc.strerror}", "a NAD with a resourceName needs it") from exc
        except ValueError as exc:
            raise InvalidNetworkConfig(
                f"the kubelet's device checkpoint {self.checkpoint} is not JSON", str(exc)
            ) from exc
        entries = ((data.get("Data") or {}).get("PodDeviceEntries") or []
                   if isinstance(data, dict) else [])
        free: dict[str, list[str]] = {}
        for entry in entries:
            if isinstance(entry, dict) and entry.get("PodUID") == self.pod_uid:
                free.setdefault(str(entry.get("ResourceName")), []).extend(
                    _ids(entry.get("DeviceIDs")))
        return free

    def take(self, resource: str, network: str) -> str:
        """The next unused device of ``resource``; InvalidNetworkConfig if none is left."""
        if self._free is None:
            self._free = self._load()
        devices = self._free.get(resource) or []
        if not devices:
            raise InvalidNetworkConfig(
                f"network {network} needs a device of resource {resource!r}, but the kubelet "
                f"allocated none (left) to pod UID {self.pod_uid!r}",
                "request the resource in the pod's container limits")
        return devices.pop(0)
