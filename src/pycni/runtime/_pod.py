"""Pod-level networking in the kubelet's shape: set up, tear down, report status.

A pod (one network namespace) gets, in order:

1. loopback: the ``cni-loopback`` network (``{"type": "loopback"}``) on ifname ``lo``, as
   containerd's go-cni and CRI-O do;
2. its network: the one asked for by name, else the directory's default network (the
   lexically first valid file), else pycni's built-in network, on ``eth0``.

Teardown runs the same steps in reverse and is idempotent: a pod that is half set up, already
torn down, or whose namespace is gone tears down without error. A network whose file has
disappeared since the ADD is deleted with the config the result cache recorded (CRI-O does
the same), so its IPAM leases are still released.

CNI_ARGS carry ``IgnoreUnknown=1`` and the ``K8S_POD_*`` keys when a pod name is given, the
way the kubelet passes them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host import LinkInfo, netns_links
from ..spec import CNIError, NetworkConfigList, Result
from ._cache import DEFAULT_CACHE_DIR
from ._cni import CNIConfig, PluginExec, RuntimeConf
from ._discovery import DEFAULT_CONF_DIR, NetworkNotFound, discover

log = logging.getLogger("pycni.runtime")

LOOPBACK_NETWORK_NAME = "cni-loopback"
LOOPBACK_IFNAME = "lo"
DEFAULT_IFNAME = "eth0"
#: Where runtimes usually install plugins.
DEFAULT_CNI_PATH = ("/opt/cni/bin",)


def loopback_network() -> NetworkConfigList:
    """The loopback network every pod gets first."""
    return NetworkConfigList.parse({"cniVersion": "1.0.0", "name": LOOPBACK_NETWORK_NAME,
                                    "plugins": [{"type": "loopback"}]})


@dataclass
class PodSetup:
    """What setting a pod up produced."""

    pod_id: str
    netns: str
    network: str
    ifname: str
    result: Result

    @property
    def ips(self) -> list[str]:
        """The addresses the network's result reported (``addr/prefix``)."""
        return [str(ip.address) for ip in self.result.ips]


@dataclass
class PodStatus:
    """What is in a pod's namespace right now."""

    pod_id: str
    netns: str
    links: list[LinkInfo] = field(default_factory=list)

    def link(self, name: str) -> LinkInfo | None:
        """The link called ``name``, if present."""
        return next((link for link in self.links if link.name == name), None)

    @property
    def ips(self) -> list[str]:
        """Routable addresses on every non-loopback link (``addr/prefix``), IPv4 first per
        link; IPv6 link-local ones are left out, as the kubelet's pod IPs leave them out."""
        return [a for link in self.links if link.name != LOOPBACK_IFNAME for a in link.addresses
                if not ipaddress.ip_interface(a).is_link_local]

    def to_json(self) -> dict[str, Any]:
        """A plain object for ``--json`` output."""
        return {"podID": self.pod_id, "netns": self.netns, "ips": self.ips,
                "interfaces": [{"name": link.name, "up": link.up, "mac": link.mac,
                                "mtu": link.mtu, "addresses": list(link.addresses)}
                               for link in self.links]}


class PodNetworks:
    """Sets pods' networks up and down from a configuration directory."""

    def __init__(
        self,
        *,
        conf_dir: str = DEFAULT_CONF_DIR,
        path: Sequence[str] = DEFAULT_CNI_PATH,
        cache_dir: str = DEFAULT_CACHE_DIR,
        builtin: NetworkConfigList | None = None,
        loopback: bool = True,
        exec_: PluginExec | None = None,
    ) -> None:
        self.conf_dir = conf_dir
        self.builtin = builtin
        self.loopback = loopback
        self.cni = CNIConfig(path, cache_dir, exec_=exec_)

    def network(self, name: str | None = None) -> NetworkConfigList:
        """The network called ``name``, or the default one; NetworkNotFound if none."""
        found = discover(self.conf_dir)
        if name:
            try:
                return found.find(name).network
            except NetworkNotFound:
                if self.builtin is not None and self.builtin.name == name:
                    return self.builtin
                raise
        if found.default is not None:
            return found.default.network
        if self.builtin is not None:
            return self.builtin
        raise NetworkNotFound(f"no network configuration in {self.conf_dir}")

    @staticmethod
    def _args(pod_id: str, pod_name: str, pod_namespace: str) -> list[tuple[str, str]]:
        args = [("IgnoreUnknown", "1")]
        if pod_name:
            args += [("K8S_POD_NAMESPACE", pod_namespace or "default"),
                     ("K8S_POD_NAME", pod_name), ("K8S_POD_INFRA_CONTAINER_ID", pod_id)]
        return args

    def setup(
        self,
        pod_id: str,
        netns: str,
        *,
        network: str | None = None,
        ifname: str = DEFAULT_IFNAME,
        pod_name: str = "",
        pod_namespace: str = "",
        capability_args: dict[str, Any] | None = None,
    ) -> PodSetup:
        """Loopback, then the network on ``ifname``. On failure, undo and raise."""
        net = self.cni.negotiate(self.network(network))
        args = self._args(pod_id, pod_name, pod_namespace)
        rt = RuntimeConf(pod_id, netns, ifname, args, dict(capability_args or {}))
        try:
            if self.loopback:
                self.cni.add_network_list(loopback_network(),
                                          RuntimeConf(pod_id, netns, LOOPBACK_IFNAME, args))
            result = self.cni.add_network_list(net, rt)
        except CNIError:
            try:
                self.teardown(pod_id, netns, network=network, ifname=ifname, pod_name=pod_name,
                              pod_namespace=pod_namespace, capability_args=capability_args)
            except CNIError as undo:
                log.warning("cleaning up after a failed setup of pod %s also failed: %s",
                            pod_id, undo)
            raise
        return PodSetup(pod_id, netns, net.name, ifname, result)

    def _network_for_teardown(self, pod_id: str, network: str | None, ifname: str
                              ) -> NetworkConfigList | None:
        cached = [e for e in self.cni.cached_attachments(pod_id)
                  if e.ifname == ifname and e.network_name != LOOPBACK_NETWORK_NAME]
        wanted = network or (cached[0].network_name if cached else None)
        try:
            return self.cni.negotiate(self.network(wanted))
        except NetworkNotFound:
            entry = next((e for e in cached if e.network_name == wanted), None)
            if entry is None:
                log.info("pod %s: no network %s to tear down", pod_id, wanted or "(default)")
                return None
            log.info("network %s is no longer configured; deleting with its cached config",
                     entry.network_name)
            return self.cni.negotiate(NetworkConfigList.parse(entry.config))

    def teardown(
        self,
        pod_id: str,
        netns: str,
        *,
        network: str | None = None,
        ifname: str = DEFAULT_IFNAME,
        pod_name: str = "",
        pod_namespace: str = "",
        capability_args: dict[str, Any] | None = None,
    ) -> None:
        """DEL the network, then loopback; idempotent. Raises the first failure after
        trying both steps."""
        # A namespace that is gone is not passed on: the spec lets plugins clean up without
        # one, and some plugins fail on a path that does not exist.
        live_netns = netns if netns and Path(netns).exists() else ""
        args = self._args(pod_id, pod_name, pod_namespace)
        errors: list[CNIError] = []
        try:
            net = self._network_for_teardown(pod_id, network, ifname)
            if net is not None:
                self.cni.delete_network_list(
                    net, RuntimeConf(pod_id, live_netns, ifname, args,
                                     dict(capability_args or {})))
        except CNIError as exc:
            errors.append(exc)
        if self.loopback:
            try:
                self.cni.delete_network_list(
                    loopback_network(), RuntimeConf(pod_id, live_netns, LOOPBACK_IFNAME, args))
            except CNIError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def check(self, pod_id: str, netns: str, *, network: str | None = None,
              ifname: str = DEFAULT_IFNAME) -> None:
        """CHECK the pod's network (loopback has nothing worth checking)."""
        net = self.cni.negotiate(self.network(network))
        self.cni.check_network_list(net, RuntimeConf(pod_id, netns, ifname,
                                                     self._args(pod_id, "", "")))

    def status(self, pod_id: str, netns: str) -> PodStatus:
        """The links and addresses in the pod's namespace (NetNSNotFound if it is gone)."""
        return PodStatus(pod_id, netns, netns_links(netns))
