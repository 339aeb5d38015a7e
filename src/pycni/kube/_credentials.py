"""A lightkube client that follows its credential files (see the package docstring)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lightkube import ApiError, Client, ConfigError, KubeConfig
from lightkube.config.models import Cluster, User

from ..spec import InvalidNetworkConfig

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

T = TypeVar("T")


class KubeCredentials:
    """Where the API client's credentials come from, and the client built from them.

    ``kubeconfig``: a kubeconfig file; without one, ``<service_account_dir>/token`` and
    ``ca.crt`` with ``KUBERNETES_SERVICE_HOST``/``_PORT`` (a pod's in-cluster credentials).
    ``field_manager`` names the writer in the objects' managedFields. ``timeout``: seconds
    per request (None: lightkube's default).
    """

    def __init__(self, kubeconfig: str | None = None, *,
                 service_account_dir: str = SERVICE_ACCOUNT_DIR,
                 field_manager: str = "pycni", timeout: float | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.service_account_dir = Path(service_account_dir)
        self.field_manager = field_manager
        self.timeout = timeout
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._signature: tuple[Any, ...] | None = None
        self._clients: list[Client] = []

    def _files(self) -> list[Path]:
        if self.kubeconfig:
            return [Path(self.kubeconfig)]
        return [self.service_account_dir / "token", self.service_account_dir / "ca.crt"]

    def _current_signature(self) -> tuple[Any, ...]:
        signature: list[tuple[Any, ...]] = []
        for path in self._files():
            try:
                st = path.stat()
            except OSError:
                signature.append((str(path), None))
            else:
                signature.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(signature)

    def load_config(self) -> KubeConfig:
        """The configuration the files give now; InvalidNetworkConfig naming what is missing."""
        if self.kubeconfig:
            try:
                return KubeConfig.from_file(self.kubeconfig)
            except (ConfigError, OSError, ValueError) as exc:
                raise InvalidNetworkConfig(
                    f'invalid "kubeconfig": cannot load {self.kubeconfig}', str(exc)) from exc
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT")
        token = self.service_account_dir / "token"
        if not host or not port or not token.is_file():
            raise InvalidNetworkConfig(
                'no "kubeconfig" and no in-cluster credentials: expected '
                f"{token} and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT, found "
                f"token file {'present' if token.is_file() else 'missing'}, host {host!r}, "
                f"port {port!r}")
        if ":" in host:
            host = f"[{host}]"
        # token_file only (no inline token): lightkube then reads the file per client and
        # again on every 401, as client-go does for projected service-account tokens.
        return KubeConfig.from_one(
            cluster=Cluster(server=f"https://{host}:{port}",
                            certificate_auth=str(self.service_account_dir / "ca.crt")),
            user=User(token_file=str(token)))

    def client(self, *, refresh: bool = False) -> Client:
        """The API client, rebuilt when the credential files changed (or ``refresh``)."""
        signature = self._current_signature()
        with self._lock:
            if self._client is None or refresh or signature != self._signature:
                kwargs: dict[str, Any] = {}
                if self.timeout is not None:
                    kwargs["timeout"] = self.timeout
                self._client = Client(config=self.load_config(), trust_env=False,
                                      field_manager=self.field_manager, **kwargs)
                self._clients.append(self._client)
                self._signature = signature
            return self._client

    def request(self, call: Callable[[Client], T]) -> T:
        """Run ``call(client)``; after a 401 rebuild the client from disk once and retry."""
        try:
            return call(self.client())
        except ApiError as exc:
            if exc.status.code != 401:
                raise
        return call(self.client(refresh=True))

    def close(self) -> None:
        """Close every client built so far."""
        with self._lock:
            clients, self._clients, self._client = self._clients, [], None
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
