"""Hot-plug: the agent keeps each running pod's attachments equal to its networks annotation.

:class:`HotPlug` watches the pods of one node (list+watch, field selector ``spec.nodeName``)
and every NetworkAttachmentDefinition (:class:`pycni.kube.Informer`). On every pod event and
on a periodic resync it compares the pod's ``k8s.v1.cni.cncf.io/networks`` annotation with
the pod's record (:mod:`pycni.multi._record`: netns path, container ID, attachments) and
removes, then adds, exactly the attachments that differ, with :func:`remove_attachment` and
:func:`add_attachment` under the record's lock. It is level-driven: nothing remembers the
previous annotation, so an agent that was down converges on its first list. The cluster
network is never removed or replaced here (a log line and a Kubernetes Event name the pod);
switching it is ``pycni migrate``.

An annotation entry matches a recorded attachment by network and, when the entry names one,
interface; an entry without one keeps whatever ``netN`` its network already has, so removing
the first of two networks does not rename the second. Changing the other keys of an entry
that is attached (``ips``, ``mac``...) is not applied to the live interface: remove the
entry and add it back.

The same caches serve the ``multus`` plugin when it runs inside the agent
(:class:`WatchCache`, a :class:`ClusterSource`): pods and NADs come from memory, with a GET
on a miss (a pod created a moment ago that the watch has not delivered yet).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..host import run_in_netns
from ..kube import Informer
from ..spec import CNIError, InvalidNetworkConfig
from ._attach import add_attachment, remove_attachment
from ._config import MultusConfig
from ._kube import NAD_GROUP, NAD_KIND, NAD_PLURAL, NAD_VERSION, KubeSource, NadInfo, PodInfo
from ._plugin import Multus
from ._record import Attachment, PodRecord, PodRecords
from ._selection import (
    DEFAULT_NETWORK_ANNOTATION,
    NETWORKS_ANNOTATION,
    NetworkSelection,
    parse_default_network,
    parse_networks,
)

log = logging.getLogger("pycni.multi.hotplug")

T = TypeVar("T")

#: Seconds between full resyncs (every cached pod reconciled again: retries what failed,
#: picks up NADs created after the pod asked for them).
RESYNC = 60.0


def _pod_info(obj: Any) -> PodInfo:
    meta = obj.metadata
    return PodInfo(meta.namespace or "", meta.name or "", meta.uid or "",
                   dict(meta.annotations or {}), resource_version=meta.resourceVersion or "")


def _nad_info(obj: Any) -> NadInfo:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    config = spec.get("config") or ""
    return NadInfo(str(meta.get("namespace") or ""), str(meta.get("name") or ""),
                   config if isinstance(config, str) else "",
                   dict(meta.get("annotations") or {}))


class WatchCache:
    """:class:`ClusterSource` on the agent's caches; a miss is a GET through ``fallback``
    (which also writes network-status)."""

    def __init__(self, pods: Informer, nads: Informer, fallback: KubeSource) -> None:
        self.pods = pods
        self.nads = nads
        self.fallback = fallback
        #: Lookups the caches answered, and those that needed a GET.
        self.hits = 0
        self.misses = 0

    def pod(self, namespace: str, name: str) -> PodInfo:
        """See :class:`ClusterSource`."""
        obj = self.pods.get(namespace, name)
        if obj is None:
            self.misses += 1
            return self.fallback.pod(namespace, name)
        self.hits += 1
        return _pod_info(obj)

    def nad(self, namespace: str, name: str) -> NadInfo | None:
        """See :class:`ClusterSource`."""
        obj = self.nads.get(namespace, name)
        if obj is None:
            self.misses += 1
            return self.fallback.nad(namespace, name)
        self.hits += 1
        return _nad_info(obj)

    def set_network_status(self, pod: PodInfo, status: list[dict[str, Any]]) -> None:
        """See :class:`ClusterSource`."""
        self.fallback.set_network_status(pod, status)


class HotPlug:
    """The agent's Kubernetes side (see the module docstring). ``start()``/``stop()``.

    ``source`` is the API client for GETs and writes (default: a :class:`KubeSource` on
    ``kubeconfig``, None meaning in-cluster credentials); ``host_netns`` is the namespace
    the delegates act in (default: the one of the thread that calls ``start``).
    """

    def __init__(self, conf: MultusConfig, node_name: str, *, kubeconfig: str | None = None,
                 source: KubeSource | None = None, host_netns: str | None = None,
                 resync: float = RESYNC, cni_path: Sequence[str] | None = None) -> None:
        from lightkube.generic_resource import create_namespaced_resource
        from lightkube.resources.core_v1 import Pod

        self.conf = conf
        self.node_name = node_name
        self.kubeconfig = kubeconfig
        self.source = source or KubeSource(kubeconfig)
        self.host_netns = host_netns
        self.resync = resync
        self.cni_path = cni_path
        self.records = PodRecords(conf.cni_dir)
        self.plugin = Multus()
        nad_class = create_namespaced_resource(NAD_GROUP, NAD_VERSION, NAD_KIND, NAD_PLURAL)
        self.pods = Informer(kubeconfig, Pod,
                             fields={"spec.nodeName": node_name}, on_change=self._on_pod,
                             name="pod-watch")
        self.nads = Informer(kubeconfig, nad_class, name="nad-watch")
        self.cache = WatchCache(self.pods, self.nads, self.source)
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._pending: set[tuple[str, str]] = set()
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._reported: set[tuple[str, str, str]] = set()
        #: Reconciles done (tests wait on it).
        self.passes = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watches and the reconcile thread."""
        self.nads.start()
        self.pods.start()
        self._worker = threading.Thread(target=self._work, name="pycni-hotplug", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop watching and reconciling (a reconcile in progress finishes)."""
        self._stop.set()
        self.pods.stop()
        self.nads.stop()
        if self._worker is not None:
            self._worker.join(timeout=30)
        self.source.close()

    def source_for(self, kubeconfig: str | None) -> Any:
        """The :class:`ClusterSource` for a ``multus`` call with this ``kubeconfig``: the
        watch cache when it names the agent's cluster, else a :class:`KubeSource`."""
        same = (kubeconfig or None) == (self.kubeconfig or None) or (
            kubeconfig and self.kubeconfig
            and Path(kubeconfig).resolve() == Path(self.kubeconfig).resolve())
        return self.cache if same else KubeSource(kubeconfig)

    # -- the queue ---------------------------------------------------------------------------

    def _on_pod(self, kind: str, obj: Any) -> None:
        if kind == "DELETED":
            return  # the runtime's DEL tears the pod down from its record
        self.enqueue(obj.metadata.namespace or "", obj.metadata.name or "")

    def enqueue(self, namespace: str, name: str) -> None:
        """Reconcile this pod soon (once, however often it is asked before it runs)."""
        key = (namespace, name)
        with self._pending_lock:
            if key in self._pending:
                return
            self._pending.add(key)
        self._queue.put(key)

    def _work(self) -> None:
        next_resync = 0.0
        import time

        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_resync and self.pods.synced.is_set():
                next_resync = now + self.resync
                for obj in self.pods.items():
                    self.enqueue(obj.metadata.namespace or "", obj.metadata.name or "")
            try:
                key = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._pending_lock:
                self._pending.discard(key)
            obj = self.pods.get(*key)
            if obj is None:
                continue
            try:
                self.reconcile(obj)
            except Exception:  # one pod must not stop the others
                log.exception("pod %s/%s: reconcile failed", *key)
            self.passes += 1

    # -- reconcile ---------------------------------------------------------------------------

    def _in_host(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.host_netns:
            return run_in_netns(self.host_netns, fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def reconcile(self, obj: Any) -> None:
        """Converge one pod (a lightkube Pod) to its annotation, for each of its records."""
        meta, status = obj.metadata, obj.status
        if meta.deletionTimestamp or (status is not None and status.phase in (
                "Succeeded", "Failed")):
            return
        pod = _pod_info(obj)
        if pod.namespace in self.conf.system_namespaces:
            return  # Multus ignores their annotations at ADD too
        for record in self.records.find(pod.namespace, pod.name, pod.uid):
            if record.netns and not Path(record.netns).exists():
                continue  # the sandbox is gone; its DEL will come
            # The whole pass runs on one thread (the record lock is per thread), in the
            # namespace the delegates act in; Events are posted from here afterwards.
            for reason, message in self._in_host(self._converge, pod, record):
                self._refuse(pod, reason, message)

    def _fixed_networks(self) -> set[str]:
        """Attachments every pod gets from the configuration (not from its annotation)."""
        conf = self.conf
        fixed = {n.name for n in conf.delegates[1:]} if not conf.cluster_network else set()
        for name in conf.default_networks:
            namespace, _, short = name.rpartition("/")
            fixed.add(f"{namespace or conf.multus_namespace}/{short}")
        return fixed

    def _converge(self, pod: PodInfo, record: PodRecord) -> list[tuple[str, str]]:
        """One pass over one record; the refusals and failures, as (reason, message)."""
        key = f"{pod.namespace}/{pod.name}"
        problems: list[tuple[str, str]] = []
        with self.records.lock(record.container_id, record.ifname):
            fresh = self.records.load(record.container_id, record.ifname)
            if fresh is None:
                return problems
            cluster = next((a for a in fresh.attachments if a.default), None)
            try:
                desired = parse_networks(pod.annotations.get(NETWORKS_ANNOTATION, ""),
                                         pod.namespace)
                wanted_default = pod.annotations.get(DEFAULT_NETWORK_ANNOTATION, "").strip()
                if wanted_default and cluster is not None:
                    sel = parse_default_network(wanted_default, self.conf.multus_namespace)
                    if sel.key != cluster.network:
                        problems.append((
                            "ClusterNetworkChange",
                            f"pod {key}: the default network annotation asks for {sel.key}, "
                            f"the pod runs on {cluster.network}: hot-plug does not replace "
                            "the cluster network (use pycni migrate)"))
            except InvalidNetworkConfig as exc:
                problems.append(("InvalidNetworks", f"pod {key}: {exc.msg}"))
                return problems
            fixed = self._fixed_networks()
            extras_before = sum(1 for a in fresh.attachments
                                if not a.default and a.network in fixed)
            unmatched: list[Attachment] = [a for a in fresh.attachments
                                           if not a.default and a.network not in fixed]
            to_add: list[tuple[NetworkSelection, str]] = []
            for position, sel in enumerate(desired, start=extras_before + 1):
                if cluster is not None and sel.interface == cluster.interface:
                    problems.append((
                        "ClusterNetworkChange",
                        f"pod {key}: network {sel.key} asks for {sel.interface}, the "
                        f"interface of the cluster network ({cluster.network}): hot-plug "
                        "does not replace the cluster network"))
                    continue
                match = next((a for a in unmatched if a.network == sel.key and (
                    a.interface == (sel.interface or f"net{position}"))), None)
                if match is None and not sel.interface:
                    match = next((a for a in unmatched if a.network == sel.key), None)
                if match is not None:
                    unmatched.remove(match)
                else:
                    to_add.append((sel, sel.interface or f"net{position}"))
            if not unmatched and not to_add:
                return problems
            for att in unmatched:
                log.info("pod %s: hot-plug removes %s (%s)", key, att.network, att.interface)
                try:
                    remove_attachment(self.conf, fresh, att.interface, source=self.cache,
                                      cni_path=self.cni_path, plugin=self.plugin)
                except CNIError as exc:
                    problems.append(("HotPlugFailed", f"pod {key}: cannot remove "
                                     f"{att.network} ({att.interface}): {exc.msg}"))
            for sel, positional in to_add:
                current = self.records.load(record.container_id, record.ifname)
                if current is None:
                    return problems
                interface = positional
                if not sel.interface and any(a.interface == positional
                                             for a in current.attachments):
                    interface = ""  # its positional netN is taken: the lowest free one
                log.info("pod %s: hot-plug adds %s", key, sel.key)
                try:
                    add_attachment(self.conf, current,
                                   dataclasses.replace(sel, interface=interface),
                                   source=self.cache, cni_path=self.cni_path,
                                   plugin=self.plugin)
                except CNIError as exc:
                    problems.append(("HotPlugFailed",
                                     f"pod {key}: cannot add {sel.key}: {exc.msg}"))
        return problems

    def _refuse(self, pod: PodInfo, reason: str, message: str) -> None:
        """A log line naming the pod, and (once per pod, reason and message) an Event."""
        log.warning("%s", message)
        mark = (pod.uid, reason, message)
        if mark in self._reported:
            return
        self._reported.add(mark)
        try:
            self._event(pod, reason, message)
        except Exception as exc:  # an Event is a courtesy: the log line is the record
            log.info("pod %s/%s: cannot post an Event: %s", pod.namespace, pod.name, exc)

    def _event(self, pod: PodInfo, reason: str, message: str) -> None:
        from lightkube.models.core_v1 import EventSource, ObjectReference
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.core_v1 import Event

        now = datetime.now(UTC)
        event = Event(
            metadata=ObjectMeta(generateName=f"{pod.name}.", namespace=pod.namespace),
            involvedObject=ObjectReference(kind="Pod", apiVersion="v1", name=pod.name,
                                           namespace=pod.namespace, uid=pod.uid),
            reason=reason, message=message[:1024], type="Warning",
            source=EventSource(component="pycni-agent", host=self.node_name),
            firstTimestamp=now, lastTimestamp=now, count=1)
        self.source.credentials.request(lambda c: c.create(event))


_previous: list[Any] = []


def use_watch_cache(hotplug: HotPlug | None) -> None:
    """Make ``multus`` calls in this process read pods and NADs through ``hotplug``'s
    caches (None: back to a GET per call)."""
    if hotplug is None:
        if _previous:
            Multus.source_factory = _previous.pop()
        return
    _previous.append(Multus.source_factory)
    Multus.source_factory = hotplug.source_for
