"""A list+watch cache of one kind of Kubernetes object (client-go's informer, small).

:class:`Informer` lists the objects (optionally filtered by a field selector), keeps them in a
dict by ``(namespace, name)``, then watches from the list's resourceVersion; a 410 ("too old")
relists, any other failure waits and relists. After every list and every event it calls
``on_change(kind, obj)`` (``kind`` is ``SYNC`` for listed objects, else the watch's
``ADDED``/``MODIFIED``/``DELETED``), on its own thread. A watch that breaks resumes from
the last resourceVersion it saw.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ._credentials import KubeCredentials

log = logging.getLogger("pycni.kube")

#: Seconds the API server keeps a quiet watch open (lightkube then reopens it).
WATCH_SERVER_TIMEOUT = 30
#: Seconds a read may block: a quiet watch is reopened (from its resourceVersion) this
#: often, which is also how soon ``stop()`` ends it. Closing the client under a thread
#: blocked in a read would be quicker, but that thread's TLS object would go on reading
#: the closed fd's number, which the next socket the process opens reuses.
READ_TIMEOUT = 5.0
#: Seconds between attempts after a failure.
RETRY = 1.0

Key = tuple[str, str]


def _key(obj: Any) -> Key:
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
    if isinstance(meta, dict):
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")
    return str(meta.namespace or ""), str(meta.name or "")


def _version(obj: Any) -> str:
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
    return str(meta.get("resourceVersion") if isinstance(meta, dict) else meta.resourceVersion)


class Informer:
    """A list+watch cache of ``resource`` (a lightkube resource class); see the module
    docstring. ``start()`` then ``get``/``items``; ``stop()``."""

    def __init__(self, kubeconfig: str | None, resource: Any, *,
                 fields: dict[str, str] | None = None,
                 on_change: Callable[[str, Any], None] | None = None,
                 name: str = "informer") -> None:
        self.credentials = KubeCredentials(kubeconfig, timeout=READ_TIMEOUT)
        self.resource = resource
        self.fields = fields
        self.on_change = on_change
        self.name = name
        self.synced = threading.Event()
        self._objects: dict[Key, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Lists done (the first one and each relist): tests and metrics read it.
        self.lists = 0

    def start(self) -> None:
        """List and watch on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name=f"pycni-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; the thread ends (and closes its client) within READ_TIMEOUT."""
        self._stop.set()

    def get(self, namespace: str, name: str) -> Any | None:
        """The cached object, None if the cache does not hold it."""
        with self._lock:
            return self._objects.get((namespace, name))

    def items(self) -> list[Any]:
        """Every cached object."""
        with self._lock:
            return list(self._objects.values())

    def _notify(self, kind: str, obj: Any) -> None:
        if self.on_change is None or self._stop.is_set():
            return
        try:
            self.on_change(kind, obj)
        except Exception:  # one object's handler must not end the watch
            log.exception("%s: handling %s %s/%s failed", self.name, kind, *_key(obj))

    def _list(self) -> str:
        def do_list(client: Any) -> tuple[list[Any], str]:
            listing = client.list(self.resource, namespace="*", fields=self.fields)
            items = list(listing)
            return items, listing.resourceVersion

        items, version = self.credentials.request(do_list)
        with self._lock:
            self._objects = {_key(o): o for o in items}
        self.lists += 1
        self.synced.set()
        for obj in items:
            self._notify("SYNC", obj)
        return str(version)

    def _run(self) -> None:
        try:
            self._watch_loop()
        finally:
            self.credentials.close()

    def _on_error(self, exc: Exception, count: int) -> Any:  # noqa: ARG002 - lightkube's API
        import httpx2 as httpx
        from lightkube.types import OnErrorAction, OnErrorResult

        if self._stop.is_set():
            return OnErrorResult(OnErrorAction.STOP)
        if isinstance(exc, httpx.ReadTimeout):
            return OnErrorResult(OnErrorAction.RETRY)  # quiet: reopen from the last version
        return OnErrorResult(OnErrorAction.RAISE)

    def _watch_loop(self) -> None:
        from lightkube import ApiError

        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()

                def watch(client: Any, since: str = version) -> Any:
                    return client.watch(self.resource, namespace="*", fields=self.fields,
                                        resource_version=since, on_error=self._on_error,
                                        server_timeout=WATCH_SERVER_TIMEOUT)

                for kind, obj in self.credentials.request(watch):
                    if self._stop.is_set():
                        return
                    version = _version(obj)
                    with self._lock:
                        if kind == "DELETED":
                            self._objects.pop(_key(obj), None)
                        elif kind in ("ADDED", "MODIFIED"):
                            self._objects[_key(obj)] = obj
                    self._notify(kind, obj)
            except ApiError as exc:
                if self._stop.is_set():
                    return
                if exc.status.code == 410:
                    log.info("%s: resourceVersion %s is too old; relisting", self.name, version)
                else:
                    log.warning("%s: watch failed: HTTP %s %s", self.name, exc.status.code,
                                exc.status.message or "")
                    self._stop.wait(RETRY)
                    continue  # resume from the last resourceVersion
                version = None
            except Exception as exc:  # the connection, the server going away: relist
                if self._stop.is_set():
                    return
                log.warning("%s: list/watch failed: %s: %s", self.name, type(exc).__name__, exc)
                self._stop.wait(RETRY)  # then resume from the last resourceVersion
