"""The node controller's follow loop, with a fake datastore and backend (no kernel)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from pycni.cluster import ClusterConfig, NodeController, NodeRecord, PeerUpdate
from pycni.cluster.backends import BACKENDS, ReconcileReport
from pycni.testing import wait_for

BURST = 60


def _record(i: int) -> NodeRecord:
    return NodeRecord(f"n{i}", (ipaddress.ip_network(f"10.244.{i}.0/24"),),
                      {"backend": "vxlan"})


class BurstDatastore:
    """One full list, then BURST single-node updates a millisecond apart (nodes joining)."""

    name: ClassVar[str] = "fake"
    options: ClassVar[frozenset[str]] = frozenset()
    node = "me"
    renew_interval = None

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.sent = threading.Event()

    def watch(self) -> Iterator[PeerUpdate]:
        peers: dict[str, NodeRecord] = {}
        yield PeerUpdate({}, frozenset(), resync=True)
        for i in range(BURST):
            peers[f"n{i}"] = _record(i)
            yield PeerUpdate(dict(peers), frozenset({f"n{i}"}))
            time.sleep(0.001)
        self.sent.set()
        self.closed.wait(30)

    def close(self) -> None:
        self.closed.set()


class CountingBackend:
    """Records the size of the peer set of every reconcile pass."""

    name: ClassVar[str] = "vxlan"
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.passes: list[int] = []

    def reconcile(self, peers: Mapping[str, NodeRecord]) -> ReconcileReport:
        self.passes.append(len(peers))
        return ReconcileReport()

    def teardown(self) -> None:
        pass


def test_a_burst_of_watch_updates_costs_few_reconcile_passes(tmp_path: Any) -> None:
    config = ClusterConfig.parse({"datastore": "etcd", "nodeName": "me",
                                  "backend": {"type": "vxlan"}, "reconcileInterval": 600,
                                  "confDir": str(tmp_path)}, backends=BACKENDS)
    datastore, backend = BurstDatastore(), CountingBackend()
    controller = NodeController(config, datastore=datastore,  # type: ignore[arg-type]
                                backend=backend)  # type: ignore[arg-type]
    # no kernel here: "bringing the node up" only marks it ready
    controller._bring_up = lambda: controller._set(  # type: ignore[method-assign]
        phase="ready", config_written=True)
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        assert datastore.sent.wait(30)
        assert wait_for(lambda: backend.passes and backend.passes[-1] == BURST, timeout=10)
    finally:
        controller.stop()
        datastore.close()
        thread.join(10)
    # level-driven: the last pass saw every node; coalesced: far fewer passes than updates
    # (without coalescing there is about one pass per update)
    assert backend.passes[-1] == BURST
    assert len(backend.passes) <= BURST // 6, backend.passes
    assert controller.status.reconciles == len(backend.passes)
