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
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
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


#: The NetworkAttachmentDefinition CRD (k8s.cni.cncf.io/v1), as the Network Plumbing WG
#: publishes it: ``KubeAPIServer.create_crd(NAD_CRD)`` before making NADs.
NAD_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
    "spec": {
        "group": "k8s.cni.cncf.io",
        "scope": "Namespaced",
        "names": {"plural": "network-attachment-definitions", "singular":
                  "network-attachment-definition", "kind": "NetworkAttachmentDefinition",
                  "shortNames": ["net-attach-def"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": {"type": "object",
                             "properties": {"config": {"type": "string"}}},
                },
            }},
        }],
    },
}


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

    def __init__(self, *, binary: str = ETCD_BINARY, ready_timeout: float = 30.0,
                 host: str = _LOOPBACK) -> None:
        if not os.access(binary, os.X_OK):
            raise ServerError(f"{binary} is missing: run scripts/setup.sh (Debian package "
                              f"etcd-server)")
        super().__init__(ready_timeout)
        self.binary = binary
        self.data_dir = self.dir / "data"
        # ``host`` other than loopback: an address of the namespace the server is started
        # in (``pycni lab`` runs it on the lab's underlay); ports are picked on loopback here.
        self.client_port = free_port()
        self.peer_port = free_port()
        #: The client URL, e.g. ``http://127.0.0.1:40123``.
        self.url = f"http://{host}:{self.client_port}"
        self.peer_url = f"http://{host}:{self.peer_port}"

    def _argv(self) -> list[str]:
        return [
            self.binary, "--name", "pycni-test", "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"pycni-test={self.peer_url}",
            "--initial-cluster-state", "new", "--log-level", "warn", "--logger", "zap",
            # A lone member still waits one election timeout (1 s by default) before it leads
            # and serves; with no peers there is no election to lose by being quick.
            "--heartbeat-interval", "20", "--election-timeout", "200",
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


_OPENSSL_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {cn}
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[serving]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = IP:127.0.0.1, IP:10.96.0.1, {extra_san}DNS:localhost, DNS:kubernetes, \
DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
"""


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise ServerError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_test_pki(directory: Path, *, ips: Iterable[str] = ()) -> None:
    """Write a throwaway PKI for one API server into ``directory``.

    ``ca.crt``/``ca.key`` (the cluster CA), ``apiserver.crt``/``apiserver.key`` (serving,
    for 127.0.0.1 and the in-cluster names), ``sa.key``/``sa.pub`` (service-account token
    signing). EC P-256 keys: quick to make, and Go and Python's ssl accept them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    extra = "".join(f"IP:{ip}, " for ip in ips)
    (directory / "ca.cnf").write_text(_OPENSSL_CONF.format(cn="pycni-test-ca", extra_san=extra))
    (directory / "apiserver.cnf").write_text(_OPENSSL_CONF.format(cn="kube-apiserver",
                                                                  extra_san=extra))
    for key in ("ca.key", "apiserver.key", "sa.key"):
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", key, cwd=directory)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    _openssl("req", "-x509", "-new", "-config", "ca.cnf", "-extensions", "ca", "-key", "ca.key",
             "-days", "3650", "-out", "ca.crt", cwd=directory)
    _openssl("req", "-new", "-config", "apiserver.cnf", "-key", "apiserver.key",
             "-out", "apiserver.csr", cwd=directory)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "apiserver.cnf",
             "-extensions", "serving", "-out", "apiserver.crt", cwd=directory)


class KubeAPIServer(_Server):
    """kube-apiserver v1.20.2 on a free loopback port, storing into the etcd at ``etcd_url``.

    HTTPS only (``url``, verified with ``ca_file``); authentication by static tokens: ``token``
    belongs to an admin in ``system:masters``, ``kubeconfig`` is a file that uses it. There is
    no controller-manager and no kubelet: create what a test needs directly (Nodes with
    ``spec.podCIDR``, Pods with ``spec.nodeName``) and patch ``/status`` where a kubelet would.

    Tokens: the static token file is read only when the server starts, so :meth:`add_token`
    and :meth:`remove_token` rewrite the file and take effect at the next :meth:`restart`
    (that restart is how a test rotates a credential). Several servers may share one etcd if
    each has its own ``etcd_prefix``.
    """

    _name = "kube-apiserver"

    def __init__(self, etcd_url: str, *, etcd_prefix: str = "/registry",
                 binary: str | None = None, ready_timeout: float = 90.0,
                 host: str = _LOOPBACK) -> None:
        binary = binary or kube_apiserver_binary()
        super().__init__(ready_timeout)
        self.binary = binary
        self.etcd_url = etcd_url
        self.etcd_prefix = etcd_prefix
        self.port = free_port()
        #: ``https://127.0.0.1:PORT``
        self.host = host
        self.url = f"https://{host}:{self.port}"
        self.pki_dir = self.dir / "pki"
        try:
            make_test_pki(self.pki_dir, ips=[host] if host != _LOOPBACK else [])
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        #: The cluster CA's certificate (PEM file): verifies the server, signs nothing else.
        self.ca_file = str(self.pki_dir / "ca.crt")
        self.token_file = self.dir / "tokens.csv"
        self._tokens: dict[str, tuple[str, tuple[str, ...]]] = {}
        #: An admin's bearer token (user ``pycni-admin``, group ``system:masters``).
        self.token = self.add_token("pycni-admin", ["system:masters"])
        #: A kubeconfig file (JSON, which is YAML) with ``url``, ``ca_file`` and ``token``.
        self.kubeconfig = str(self.write_kubeconfig(self.dir / "admin.kubeconfig", self.token))
        self._ssl = ssl.create_default_context(cafile=self.ca_file)

    def _argv(self) -> list[str]:
        pki = self.pki_dir
        return [
            self.binary,
            "--bind-address", self.host, "--secure-port", str(self.port),
            # 1.20 still serves plain HTTP on 8080 unless told not to
            "--insecure-port", "0",
            "--advertise-address", self.host,
            # no Endpoints for the "kubernetes" Service: several test servers share a host
            "--endpoint-reconciler-type", "none",
            "--etcd-servers", self.etcd_url, "--etcd-prefix", self.etcd_prefix,
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--token-auth-file", str(self.token_file),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", "10.96.0.0/12",
            "--allow-privileged=true",
            # it would reject Pods until a controller-manager made the default ServiceAccount
            "--disable-admission-plugins", "ServiceAccount",
            "--cert-dir", str(pki),
            "--profiling=false",
        ]

    def _ready(self) -> bool:
        status, _ = self._raw("GET", "/readyz", None, token=self.token,
                              content_type="application/json", timeout=2.0)
        return status == 200

    # -- credentials ------------------------------------------------------------------------

    def add_token(self, user: str, groups: Iterable[str] = (), *,
                  token: str | None = None) -> str:
        """Accept a bearer token for ``user`` in ``groups``; returns it.

        The server reads its token file at start: the token works after the next
        :meth:`restart` (or the first :meth:`start`).
        """
        token = token or secrets.token_hex(16)
        self._tokens[token] = (user, tuple(groups))
        self._write_tokens()
        return token

    def remove_token(self, token: str) -> None:
        """Stop accepting ``token`` (after the next :meth:`restart`)."""
        self._tokens.pop(token, None)
        self._write_tokens()

    def _write_tokens(self) -> None:
        # token,user,uid,"group1,group2" (the static token file's CSV format)
        lines = [f'{tok},{user},{user},"{",".join(groups)}"'
                 for tok, (user, groups) in self._tokens.items()]
        tmp = self.token_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o600)
        tmp.replace(self.token_file)

    def write_kubeconfig(self, path: str | os.PathLike[str], token: str, *,
                         token_file: bool = False) -> Path:
        """Write a kubeconfig for this server authenticating with ``token``; returns its path.

        With ``token_file`` the token goes in a file beside it (``tokenFile``), as a rotated
        credential is delivered: rewrite that file to rotate without touching the kubeconfig.
        """
        path = Path(path)
        user: dict[str, str] = {"token": token}
        if token_file:
            token_path = path.with_name(path.name + ".token")
            token_path.write_text(token)
            user = {"tokenFile": str(token_path)}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "pycni-test",
            "clusters": [{"name": "pycni-test",
                          "cluster": {"server": self.url, "certificate-authority": self.ca_file}}],
            "users": [{"name": "pycni-test", "user": user}],
            "contexts": [{"name": "pycni-test",
                          "context": {"cluster": "pycni-test", "user": "pycni-test"}}],
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    # -- requests ---------------------------------------------------------------------------

    def _raw(self, method: str, path: str, body: bytes | None, *, token: str | None,
             content_type: str, timeout: float) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                content_type: str | None = None, timeout: float = 30.0) -> Any:
        """One API call as the admin (or with ``token``); the parsed JSON reply.

        ``PATCH`` bodies default to a JSON merge patch. Raises :class:`APIStatusError` (with
        ``.status`` and the ``Status`` body) for a non-2xx answer.
        """
        if content_type is None:
            content_type = ("application/merge-patch+json" if method.upper() == "PATCH"
                            else "application/json")
        data = None if body is None else json.dumps(body).encode()
        status, raw = self._raw(method.upper(), path, data, token=token or self.token,
                                content_type=content_type, timeout=timeout)
        try:
            parsed: Any = json.loads(raw) if raw.strip() else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if not 200 <= status < 300:
            raise APIStatusError(method.upper(), path, status, parsed)
        return parsed

    def watch(self, path: str, *, resource_version: str | None = None,
              timeout_seconds: int = 30, token: str | None = None) -> Iterator[dict[str, Any]]:
        """Watch events (``{"type": "ADDED", "object": {...}}``) on a collection ``path``.

        The server ends the watch after ``timeout_seconds``; closing the generator ends it
        earlier.
        """
        query = f"watch=1&timeoutSeconds={timeout_seconds}&allowWatchBookmarks=false"
        if resource_version is not None:
            query += f"&resourceVersion={resource_version}"
        sep = "&" if "?" in path else "?"
        req = urllib.request.Request(
            f"{self.url}{path}{sep}{query}",
            headers={"Accept": "application/json",
                     "Authorization": f"Bearer {token or self.token}"})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout_seconds + 10, context=self._ssl)
        except urllib.error.HTTPError as exc:
            raise APIStatusError("WATCH", path, exc.code, exc.read()[:2000]) from exc
        with resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)

    def create_crd(self, crd: Mapping[str, Any], timeout: float = 30.0) -> None:
        """Create a CustomResourceDefinition (if absent) and wait until its resource is served.

        A new CRD answers 404 for a moment after it is accepted; tests that create objects of
        the new kind right away would be flaky without this wait.
        """
        try:
            self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        except APIStatusError as exc:
            if exc.status != 409:
                raise
        spec = crd["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("served", True))
        path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", path)
            except APIStatusError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            else:
                return
