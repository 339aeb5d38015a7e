"""Real datastores for tests: an etcd and a Kubernetes API server, started on loopback.

Cluster tests never talk to a fake API. :class:`EtcdServer` runs Debian's ``/usr/bin/etcd``
(package ``etcd-server``, installed by ``scripts/setup.sh``) on free loopback ports with a
private data directory. :class:`KubeAPIServer` runs kube-apiserver v1.20.2, which
``scripts/build-kubernetes.sh`` builds from Debian's source package into a cache outside the
checkout; :func:`kube_apiserver_binary` runs that script when the binary is missing, so a test
that needs the server starts it rather than skipping.

Both are context managers. ``stop()`` stops the process and keeps its state, ``start()`` (or
``restart()``) brings it back on the same ports with the same data, and leaving the ``with``
block (or ``close()``) stops it and removes every file it made. Neither needs root.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

#: The etcd that Debian's ``etcd-server`` installs.
ETCD_BINARY = "/usr/bin/etcd"

#: The Kubernetes version the build script makes and the tests run against.
KUBERNETES_VERSION = "v1.20.2"

_LOOPBACK = "127.0.0.1"
_REPO = Path(__file__).resolve().parents[3]
_BUILD_SCRIPT = _REPO / "scripts" / "build-kubernetes.sh"


class ServerError(RuntimeError):
    """A test server did not start, or answered a request with an error."""


class APIStatusError(ServerError):
    """The API server answered with a non-2xx status; ``body`` is its parsed ``Status``."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", "") if isinstance(body, dict) else str(body)
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.body = body


def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def kubernetes_cache_dir() -> Path:
    """Where ``scripts/build-kubernetes.sh`` keeps its source, Go cache and binaries."""
    root = os.environ.get("PYCNI_CACHE") or "/var/cache/pycni"
    return Path(root) / f"kubernetes-{KUBERNETES_VERSION}"


def _built_binary(name: str) -> str:
    path = kubernetes_cache_dir() / "bin" / name
    if not os.access(path, os.X_OK):
        if not _BUILD_SCRIPT.is_file():
            raise ServerError(f"{path} is missing and {_BUILD_SCRIPT} is not there to build it")
        # The first build takes minutes; later calls find the binary. The script locks the
        # cache, so parallel test sessions build once.
        proc = subprocess.run(["bash", str(_BUILD_SCRIPT)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0 or not os.access(path, os.X_OK):
            raise ServerError(f"{_BUILD_SCRIPT} failed ({proc.returncode}) and {path} is "
                              f"missing:\n{proc.stderr[-4000:]}")
    return str(path)


def kube_apiserver_binary() -> str:
    """The built kube-apiserver's path; builds it (``scripts/build-kubernetes.sh``) if missing."""
    return _built_binary("kube-apiserver")


def kubectl_binary() -> str:
    """The built kubectl's path; builds it (``scripts/build-kubernetes.sh``) if missing."""
    return _built_binary("kubectl")


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class _Process:
    """One server process: started in its own session, logging to a file, stopped for sure."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str]) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"{self.name} exited with {self.proc.returncode}:\n"
                              f"{_tail(self.log)}")

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Server:
    """What both servers share: a private directory, a process, start/stop/restart, ``with``."""

    _name = "server"

    def __init__(self, ready_timeout: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"pycni-{self._name}-"))
        self.ready_timeout = ready_timeout
        self._process = _Process(self._name, self.dir / f"{self._name}.log")

    @property
    def log_file(self) -> Path:
        """The server's combined stdout/stderr (kept across restarts)."""
        return self._process.log

    @property
    def pid(self) -> int | None:
        """The running server's process id, or None when it is stopped."""
        return self._process.pid

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the server (again) and wait until it answers; ServerError if it does not."""
        if self._process.pid is not None:
            return self
        self._process.start(self._argv())
        deadline = time.monotonic() + self.ready_timeout
        while True:
            self._process.check_alive()
            with contextlib.suppress(OSError, ValueError, ServerError):
                if self._ready():
                    return self
            if time.monotonic() > deadline:
                self._process.stop(kill=True)
                raise ServerError(f"{self._name} was not ready within {self.ready_timeout} s:\n"
                                  f"{_tail(self.log_file)}")
            time.sleep(0.1)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill``); its data stays for a restart."""
        self._process.stop(kill=kill)

    def restart(self, *, kill: bool = False) -> Self:
        """Stop and start again on the same address, with the same data."""
        self.stop(kill=kill)
        return self.start()

    def close(self) -> None:
        """Stop the process and remove its directory (data, certificates, log)."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


class EtcdServer(_Server):
    """A private etcd 3.4 on loopback: ``url`` is its client URL (v3 gRPC and JSON gateway).

    ``with EtcdServer() as etcd: etcd.put("/k", "v"); etcd.get("/k") == b"v"``.
    """

    _name = "etcd"

    def __init__(self, *, binary: str = ETCD_BINARY, ready_timeout: float = 30.0) -> None:
        if not os.access(binary, os.X_OK):
            raise ServerError(f"{binary} is missing: run scripts/setup.sh (Debian package "
                              f"etcd-server)")
        super().__init__(ready_timeout)
        self.binary = binary
        self.data_dir = self.dir / "data"
        self.client_port = free_port()
        self.peer_port = free_port()
        #: The client URL, e.g. ``http://127.0.0.1:40123``.
        self.url = f"http://{_LOOPBACK}:{self.client_port}"
        self.peer_url = f"http://{_LOOPBACK}:{self.peer_port}"

    def _argv(self) -> list[str]:
        return [
            self.binary, "--name", "pycni-test", "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"pycni-test={self.peer_url}",
            "--initial-cluster-state", "new", "--log-level", "warn", "--logger", "zap",
        ]

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
            return bool(json.load(resp).get("health") == "true")

    def request(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST ``body`` to the v3 JSON gateway (``path`` like ``/v3/kv/put``); parsed reply."""
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            raise ServerError(f"etcd {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc

    def put(self, key: str | bytes, value: str | bytes) -> None:
        """Write one key (through the v3 JSON gateway)."""
        self.request("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def get(self, key: str | bytes) -> bytes | None:
        """One key's value, or None when it does not exist."""
        kvs = self.request("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def get_prefix(self, prefix: str | bytes) -> dict[bytes, bytes]:
        """Every key under ``prefix`` with its value."""
        raw = prefix.encode() if isinstance(prefix, str) else prefix
        reply = self.request("/v3/kv/range",
                             {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))})
        return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", ""))
                for kv in reply.get("kvs", [])}

    def delete_prefix(self, prefix: str | bytes) -> None:
        """Remove every key under ``prefix`` (a test's cleanup of its own keys)."""
        raw = prefix.encode() if isinstance(prefix, str) else prefix
        self.request("/v3/kv/deleterange", {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))})


def _prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"
