"""The agent's cluster mode: the node controller on a thread beside the CNI socket server.

``pycni agent --cluster-config FILE`` builds a :class:`pycni.cluster.NodeController` and runs
it here. Metrics (prefix ``pycni_agent_cluster_``)::

    ready                 1 once the node's CNI config is written
    peers                 peers the backend was reconciled with
    skipped_peers         peers left out because of their data
    reconciles_total      reconcile passes
    errors_total          failures (datastore, kernel), each retried
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

TYPE_CHECKING = False
if TYPE_CHECKING:  # the cluster package (and its clients) load only in cluster mode
    from ..cluster import NodeController

log = logging.getLogger("pycni.agent")

#: Seconds a stopping agent waits for the controller thread.
STOP_TIMEOUT = 15.0


class ClusterCollector(Collector):
    """The controller's status as Prometheus metrics, read at scrape time."""

    def __init__(self, controller: NodeController) -> None:
        self._controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The metrics of the module docstring."""
        status = self._controller.status
        prefix = "pycni_agent_cluster_"
        yield GaugeMetricFamily(prefix + "ready", "1 once the node's CNI config is written",
                                value=1 if self._controller.ready else 0)
        yield GaugeMetricFamily(prefix + "peers", "Peers the backend was reconciled with",
                                value=len(status.peers))
        yield GaugeMetricFamily(prefix + "skipped_peers", "Peers left out (malformed data)",
                                value=len(status.skipped))
        yield CounterMetricFamily(prefix + "reconciles", "Reconcile passes",
                                  value=status.reconciles)
        yield CounterMetricFamily(prefix + "errors", "Failures (retried)", value=status.errors)


class ClusterRunner:
    """Runs a controller on its own thread; :meth:`stop` ends it (optionally releasing)."""

    def __init__(self, controller: NodeController) -> None:
        self.controller = controller
        self._thread = threading.Thread(target=self._run, name="pycni-cluster", daemon=True)

    def start(self) -> None:
        """Start bringing the node up (in the background)."""
        self._thread.start()

    def _run(self) -> None:
        try:
            self.controller.run()
        except Exception:  # a bug must show in the log, and /healthz must say so
            log.exception("the cluster controller failed")

    def alive(self) -> bool:
        """The controller thread runs."""
        return self._thread.is_alive()

    def stop(self, *, release: bool) -> None:
        """Stop the controller; with ``release`` remove what the node set up."""
        self.controller.stop()
        self._thread.join(STOP_TIMEOUT)
        if release:
            self.controller.release()


__all__ = ["ClusterCollector", "ClusterRunner"]
