"""What the meta plugin reads from and writes to the Kubernetes API.

:class:`ClusterSource` is the small interface the plugin needs (a pod, a NAD, writing
network-status); :class:`KubeSource` implements it with lightkube through
:class:`pycni.kube.KubeCredentials` (credentials re-read on change and on 401).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..kube import KubeCredentials
from ..spec import TryAgainLater
from ._selection import NETWORK_STATUS_ANNOTATION

NAD_GROUP = "k8s.cni.cncf.io"
NAD_VERSION = "v1"
NAD_KIND = "NetworkAttachmentDefinition"
NAD_PLURAL = "network-attachment-definitions"
#: Seconds per API request: a plugin call must not hang on an unreachable server.
REQUEST_TIMEOUT = 10.0
STATUS_ATTEMPTS = 5


class PodNotFound(TryAgainLater):
    """The pod the runtime named is not (or not yet) in the API server."""


@dataclass(frozen=True)
class PodInfo:
    """What the plugin needs of a Pod."""

    namespace: str
    name: str
    uid: str
    annotations: dict[str, str] = field(default_factory=dict)
    #: ``spec.nodeName`` ("" when unknown).
    node: str = ""
    #: ``metadata.resourceVersion`` of the copy this was read from ("" when unknown): the
    #: network-status write is tried on it first and re-reads the pod only on a conflict.
    resource_version: str = ""


@dataclass(frozen=True)
class NadInfo:
    """A NetworkAttachmentDefinition: its ``spec.config`` (may be empty) and annotations."""

    namespace: str
    name: str
    config: str = ""
    annotations: dict[str, str] = field(default_factory=dict)


class ClusterSource(Protocol):
    """Where pods and NADs come from (the API server, a watch cache, a test double)."""

    def pod(self, namespace: str, name: str) -> PodInfo:
        """The pod; PodNotFound if it does not exist, TryAgainLater if unreachable."""
        ...

    def nad(self, namespace: str, name: str) -> NadInfo | None:
        """The NAD, None if it does not exist."""
        ...

    def set_network_status(self, pod: PodInfo, status: list[dict[str, Any]]) -> None:
        """Write the pod's network-status annotation (retrying on conflict)."""
        ...


class KubeSource:
    """:class:`ClusterSource` on the API server (see the module docstring)."""

    def __init__(self, kubeconfig: str | None) -> None:
        self.credentials = KubeCredentials(kubeconfig, field_manager="pycni-multus",
                                           timeout=REQUEST_TIMEOUT)
        self._nad_resource: Any = None

    def close(self) -> None:
        """Close the HTTP clients."""
        self.credentials.close()

    def _nad_class(self) -> Any:
        if self._nad_resource is None:
            from lightkube.generic_resource import create_namespaced_resource

            self._nad_resource = create_namespaced_resource(
                NAD_GROUP, NAD_VERSION, NAD_KIND, NAD_PLURAL)
        return self._nad_resource

    def _call(self, action: str, fn: Any) -> Any:
        import httpx2 as httpx
        from lightkube import ApiError

        try:
            return self.credentials.request(fn)
        except ApiError as exc:
            if exc.status.code == 404:
                raise
            raise TryAgainLater(f"Kubernetes API: cannot {action}: HTTP {exc.status.code} "
                                f"{exc.status.reason or ''}", exc.status.message or "") from exc
        except httpx.HTTPError as exc:
            raise TryAgainLater(f"Kubernetes API: cannot {action}: {type(exc).__name__}",
                                str(exc)) from exc

    def pod(self, namespace: str, name: str) -> PodInfo:
        """See :class:`ClusterSource`."""
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Pod

        try:
            obj = self._call(f"read pod {namespace}/{name}",
                             lambda c: c.get(Pod, name, namespace=namespace))
        except ApiError as exc:
            raise PodNotFound(f"pod {namespace}/{name} is not in the API server",
                              exc.status.message or "") from exc
        meta = obj.metadata
        node = (obj.spec.nodeName if obj.spec is not None else "") or ""
        return PodInfo(namespace, name, meta.uid or "", dict(meta.annotations or {}), node,
                       meta.resourceVersion or "")

    def nad(self, namespace: str, name: str) -> NadInfo | None:
        """See :class:`ClusterSource`."""
        from lightkube import ApiError

        cls = self._nad_class()
        try:
            obj = self._call(f"read NetworkAttachmentDefinition {namespace}/{name}",
                             lambda c: c.get(cls, name, namespace=namespace))
        except ApiError:
            return None
        spec = obj.get("spec") or {}
        config = spec.get("config") or ""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        return NadInfo(namespace, name, config if isinstance(config, str) else "",
                       dict(annotations))

    def set_network_status(self, pod: PodInfo, status: list[dict[str, Any]]) -> None:
        """See :class:`ClusterSource`. The patch carries the pod's resourceVersion, so a
        concurrent writer makes it fail with 409 and it is redone on the fresh pod. The
        first try uses ``pod.resource_version`` when known (the copy the plan was made
        from, often the watch cache's): no GET unless someone wrote the pod since."""
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Pod, PodStatus

        text = json.dumps(status, indent=4)
        version = pod.resource_version
        fresh = not version
        attempt = 0
        while True:
            if fresh:
                current = self._call(f"read pod {pod.namespace}/{pod.name}",
                                     lambda c: c.get(Pod, pod.name, namespace=pod.namespace))
                if pod.uid and current.metadata.uid != pod.uid:
                    return  # the pod was replaced: its successor gets its own status
                version = current.metadata.resourceVersion or ""
            body = {"metadata": {"resourceVersion": version,
                                 "annotations": {NETWORK_STATUS_ANNOTATION: text}}}
            try:
                self._call(f"write the network-status of pod {pod.namespace}/{pod.name}",
                           lambda c, b=body: c.patch(PodStatus, pod.name, b,
                                                     namespace=pod.namespace))
            except TryAgainLater as exc:
                cause = exc.__cause__
                if (isinstance(cause, ApiError) and cause.status.code == 409
                        and attempt + 1 < STATUS_ATTEMPTS):
                    # A conflict on the caller's copy: it is stale (or the pod was
                    # replaced), re-read at once. On a fresh read: a concurrent writer,
                    # back off a little.
                    if fresh:
                        attempt += 1
                        time.sleep(0.05 * attempt)
                    fresh = True
                    continue
                raise
            return
