"""The cluster side of the node agent: subnets, backend, peers, masquerade and the CNI config.

:class:`NodeController` runs on a thread of the agent (``pycni agent --cluster-config``):

1. acquire the node's subnets from the datastore (retrying with backoff while the datastore
   is unreachable or the node has no subnet yet),
2. set the backend up (a VXLAN device, forwarding) and publish its peer data,
3. masquerade pod traffic that leaves the cluster CIDRs (pycni's own nftables table),
4. write the node's CNI config: only now can a pod's traffic reach the other nodes,
5. follow the datastore's watch and reconcile the backend after every burst of updates
   (coalesced: one pass over the latest full peer set) *and* on a timer (level-driven: a
   route someone deleted comes back), renew the claim every ``renew_interval``;
   when the claim is lost, remove the CNI config and start over.

Restarting the agent touches no live pod: set-up is idempotent, the CNI config is rewritten
only when its bytes change, and nothing is reconciled before the watch delivered the first
full list of peers (an empty desired set would remove every peer's route). On a plain stop
the node keeps everything (its claim lapses only after the lease TTL if it never returns);
:meth:`NodeController.stop` with ``release=True`` (uninstall) removes the CNI config first,
then the masquerade table and the backend's objects, and gives up the claim.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import host
from ..spec import CNIError, InvalidNetworkConfig
from ..store import atomic_write
from . import backends as _backends
from ._base import Backoff, Datastore, NodeRecord, PeerUpdate, Subnet, SubnetLostError
from ._cniconf import remove_conflist, render_conflist, write_conflist
from ._config import ClusterConfig
from ._masq import ensure_masquerade, remove_masquerade

log = logging.getLogger("pycni.cluster")

#: The first and the longest pause between attempts to bring the node up.
RETRY_FIRST = 0.2
RETRY_CAP = 10.0
#: Pause before renewing again after a failed renewal.
RENEW_RETRY = 1.0
#: After a watch update, the controller waits until the watch has been quiet this long (at
#: most COALESCE_MAX) before it reconciles: a burst of N updates (N nodes joining at once)
#: then costs one reconcile pass over the latest full peer set instead of up to N passes,
#: each of which reads the kernel's routes, neighbours and FDB again.
COALESCE_QUIET = 0.02
COALESCE_MAX = 0.25


@dataclass
class NodeStatus:
    """What the controller is doing, for /readyz, metrics and ``pycni lab status``."""

    node: str
    backend: str
    phase: str = "starting"  # starting, ready, error, stopped
    subnets: list[str] = field(default_factory=list)
    peers: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    config_written: bool = False
    last_error: str | None = None
    reconciles: int = 0
    errors: int = 0
    underlay: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def make_backend(config: ClusterConfig) -> _backends.Backend:
    """The backend ``config`` names, built from its options (errors name the field)."""
    return _backends.load_backend({"type": config.backend_type, **config.backend_options})


class NodeController:
    """Brings the node into the cluster and keeps it there; see the module docstring."""

    def __init__(self, config: ClusterConfig, *, datastore: Datastore | None = None,
                 backend: _backends.Backend | None = None, status_file: str | None = None) -> None:
        from . import load_datastore

        self.config = config
        self.datastore: Datastore = datastore or load_datastore(config.datastore)
        self.backend: _backends.Backend = backend or make_backend(config)
        self.status = NodeStatus(node=config.node_name, backend=config.backend_type)
        self._status_file = status_file
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._latest: PeerUpdate | None = None
        self._watcher: threading.Thread | None = None
        self._cidrs: tuple[Subnet, ...] = config.cluster_cidrs
        self.on_change: Callable[[NodeStatus], None] | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the node's CNI config is written and the backend is set up."""
        return self.status.phase == "ready" and self.status.config_written

    def run(self) -> None:
        """Bring the node up and follow the cluster until :meth:`stop`."""
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while not self._stop.is_set():
            try:
                self._bring_up()
            except CNIError as exc:
                self._failed("bringing the node up", exc)
                self._stop.wait(backoff.next())
                continue
            backoff.reset()
            self._start_watch()
            try:
                self._follow()
            except SubnetLostError as exc:
                self._failed("keeping the subnet", exc)
                self._withdraw_config()
        self._set(phase="stopped")

    def stop(self, *, release: bool = False) -> None:
        """End :meth:`run` (call from another thread, then join it).

        ``release``: the node leaves the cluster for good: remove the CNI config, the
        masquerade table and the backend's kernel objects, and give up the claim.
        """
        self._stop.set()
        self._wake.set()
        if release:
            self.release()

    def release(self) -> None:
        """Undo what the node set up (the CNI config first, so no new pod starts on it)."""
        self._withdraw_config()
        for what, undo in (("masquerade", remove_masquerade),
                           ("backend", self.backend.teardown),
                           ("datastore claim", self.datastore.leave),
                           ("datastore connection", self.datastore.close)):
            try:
                undo()
            except CNIError as exc:
                log.warning("release: removing the %s failed: %s", what, exc)

    # -- bring-up ------------------------------------------------------------------------

    def _bring_up(self) -> None:
        self._set(phase="starting")
        subnets = self.datastore.acquire_subnets()
        cidrs = self.config.cluster_cidrs or self._datastore_cidrs()
        self._cidrs = cidrs
        self.config.check_subnets(subnets)
        for subnet in subnets:
            host.enable_forwarding(subnet.version)
        local = self._local_node(subnets)
        peer = self.backend.setup(local)
        self.datastore.publish(peer)
        if self.config.ip_masq and cidrs:
            ensure_masquerade(cidrs)
        data = render_conflist(self.config, subnets, self._mtu(local))
        if write_conflist(self.config, data):
            log.info("wrote the node's CNI config", extra={"fields": {
                "path": str(self.config.conf_path),
                "subnets": [str(s) for s in subnets]}})
        self._set(phase="ready", subnets=[str(s) for s in subnets], config_written=True,
                  last_error=None, underlay=str(local.underlay_address))

    def _datastore_cidrs(self) -> tuple[Subnet, ...]:
        network_config = getattr(self.datastore, "network_config", None)
        if network_config is None:
            return ()
        networks: tuple[Subnet, ...] = network_config().networks
        return networks

    def _local_node(self, subnets: tuple[Subnet, ...]) -> _backends.LocalNode:
        ifname = self.config.underlay_interface or host.default_route_interface()
        if ifname is None:
            raise InvalidNetworkConfig(
                '"underlayInterface" is not set and the node has no default route to take '
                "it from: name the interface that reaches the other nodes")
        if host.link_info(ifname) is None:
            raise InvalidNetworkConfig(
                f'invalid "underlayInterface": the node has no interface {ifname!r}')
        for family in (4, 6):
            for addr in host.list_addresses(ifname, family):
                if addr.scope == host.RT_SCOPE_UNIVERSE and not addr.tentative:
                    return _backends.LocalNode(self.config.node_name, subnets,
                                               addr.address.ip, ifname)
        raise InvalidNetworkConfig(
            f'invalid "underlayInterface": {ifname!r} has no global address for the other '
            "nodes to reach this one at")

    def _mtu(self, local: _backends.LocalNode) -> int:
        # The pods' MTU is the one of the link their traffic leaves the node by: the
        # overlay device when the backend has one (underlay MTU - 50 for VXLAN), else the
        # underlay link.
        for name in (getattr(self.backend, "device", None), local.underlay_device):
            info = host.link_info(name) if name else None
            if info is not None and info.mtu:
                return int(info.mtu)
        return 1500

    # -- following -----------------------------------------------------------------------

    def _start_watch(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._watcher = threading.Thread(target=self._watch, name="pycni-cluster-watch",
                                         daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while not self._stop.is_set():
            try:
                for update in self.datastore.watch():
                    backoff.reset()
                    with self._lock:
                        self._latest = update
                    for name, reason in update.skipped.items():
                        log.warning("peer %s skipped: %s", name, reason)
                    self._wake.set()
                    if self._stop.is_set():
                        return
            except CNIError as exc:
                self._failed("watching the peers", exc)
            if self._stop.wait(backoff.next()):
                return

    def _follow(self) -> None:
        interval = self.config.reconcile_interval
        renew_every = self.datastore.renew_interval
        next_renew = time.monotonic() + renew_every if renew_every else None
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = interval if next_renew is None else max(0.0, min(interval,
                                                                       next_renew - now))
            woken = self._wake.wait(timeout)
            self._wake.clear()
            if woken:
                self._settle()
            if self._stop.is_set():
                return
            if next_renew is not None and time.monotonic() >= next_renew:
                next_renew = self._renew(renew_every or interval)
            with self._lock:
                update = self._latest
            if update is not None:
                self._reconcile(update.peers, update.skipped)

    def _settle(self) -> None:
        """Wait for a burst of watch updates to end (see COALESCE_QUIET); the reconcile
        that follows reads only the latest update, which holds the full desired set."""
        deadline = time.monotonic() + COALESCE_MAX
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or not self._wake.wait(min(COALESCE_QUIET, left)):
                return
            self._wake.clear()

    def _renew(self, every: float) -> float:
        try:
            self.datastore.renew()
        except SubnetLostError:
            raise
        except CNIError as exc:
            self._failed("renewing the claim", exc)
            return time.monotonic() + RENEW_RETRY
        return time.monotonic() + every

    def _reconcile(self, peers: Mapping[str, NodeRecord], skipped: Mapping[str, str]) -> None:
        try:
            report = self.backend.reconcile(peers)
        except CNIError as exc:
            self._failed("reconciling the peers", exc)
            return
        if report.changes or report.errors:
            log.info("reconciled", extra={"fields": {
                "peers": len(peers), "added": list(report.added),
                "replaced": list(report.replaced), "removed": list(report.removed),
                "skipped": dict(report.skipped), "errors": dict(report.errors)}})
        skipped = {**skipped, **report.skipped}
        self._set(peers={n: [str(s) for s in r.subnets] for n, r in sorted(peers.items())},
                  skipped=dict(skipped), reconciles=self.status.reconciles + 1,
                  phase="ready" if self.status.config_written else self.status.phase)

    # -- helpers -------------------------------------------------------------------------

    def _withdraw_config(self) -> None:
        try:
            if remove_conflist(self.config):
                log.info("removed the node's CNI config",
                         extra={"fields": {"path": str(self.config.conf_path)}})
        except CNIError as exc:
            log.warning("%s", exc)
        self._set(config_written=False)

    def _failed(self, doing: str, exc: CNIError) -> None:
        log.error("%s failed: %s", doing, exc)
        self._set(phase="error" if not self.status.config_written else self.status.phase,
                  last_error=f"{doing}: {exc}", errors=self.status.errors + 1)

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        if self._status_file is not None:
            try:
                atomic_write(self._status_file,
                             json.dumps(self.status.to_json()).encode(), mode=0o644)
            except OSError as exc:
                log.warning("cannot write %s: %s", self._status_file, exc.strerror)
        if self.on_change is not None:
            self.on_change(self.status)


__all__ = ["NodeController", "NodeStatus"]
