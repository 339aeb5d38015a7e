"""Multi-network pods: the Multus-compatible ``multus`` meta plugin.

NetworkAttachmentDefinitions (NADs) name networks; a pod asks for them in the
``k8s.v1.cni.cncf.io/networks`` annotation; the meta plugin runs each network's delegate
conflist beside the cluster network, records what it attached (:class:`PodRecord`, the base
for hot-plug and live switching), and writes the pod's ``k8s.v1.cni.cncf.io/network-status``.
It sits above :mod:`pycni.runtime` (whose chain logic runs the delegates) and reads the API
server through :mod:`pycni.kube`.
"""

from ._attach import (
    DefaultNetworkRemoval,
    RecordGoneError,
    add_attachment,
    next_interface,
    remove_attachment,
)
from ._config import MultusConfig
from ._devices import KUBELET_CHECKPOINT, DeviceAllocator
from ._genconfig import DEFAULT_OUTPUT, gen_config, write_config
from ._hotplug import HotPlug, WatchCache, use_watch_cache
from ._kube import (
    NAD_GROUP,
    NAD_KIND,
    NAD_PLURAL,
    NAD_VERSION,
    ClusterSource,
    KubeSource,
    NadInfo,
    PodInfo,
    PodNotFound,
)
from ._migrate import (
    Migration,
    MigrationFailed,
    SwitchReport,
    migrate,
    select_records,
    set_cluster_network,
)
from ._plugin import Multus
from ._record import Attachment, PodRecord, PodRecords
from ._selection import (
    DEFAULT_NETWORK_ANNOTATION,
    NETWORK_STATUS_ANNOTATION,
    NETWORKS_ANNOTATION,
    RESOURCE_NAME_ANNOTATION,
    NetworkSelection,
    parse_default_network,
    parse_networks,
)
from ._status import network_status, status_entry

__all__ = [
    "DEFAULT_NETWORK_ANNOTATION",
    "DEFAULT_OUTPUT",
    "KUBELET_CHECKPOINT",
    "NAD_GROUP",
    "NAD_KIND",
    "NAD_PLURAL",
    "NAD_VERSION",
    "NETWORKS_ANNOTATION",
    "NETWORK_STATUS_ANNOTATION",
    "RESOURCE_NAME_ANNOTATION",
    "Attachment",
    "ClusterSource",
    "DefaultNetworkRemoval",
    "DeviceAllocator",
    "HotPlug",
    "KubeSource",
    "Migration",
    "MigrationFailed",
    "Multus",
    "MultusConfig",
    "NadInfo",
    "NetworkSelection",
    "PodInfo",
    "PodNotFound",
    "PodRecord",
    "PodRecords",
    "RecordGoneError",
    "SwitchReport",
    "WatchCache",
    "add_attachment",
    "gen_config",
    "migrate",
    "network_status",
    "next_interface",
    "parse_default_network",
    "parse_networks",
    "remove_attachment",
    "select_records",
    "set_cluster_network",
    "status_entry",
    "use_watch_cache",
    "write_config",
]
