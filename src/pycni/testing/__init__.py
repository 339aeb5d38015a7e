"""Public test helpers: sandbox namespaces, running plugins in them, leak checks, and real
datastores (etcd, kube-apiserver) on loopback for cluster tests.

Every kernel object a test makes carries :data:`PREFIX`. Plugins under test never run in the
machine's own namespace: a test makes a "host" namespace (where the bridge, the host veth ends
and the netfilter rules go) and "container" namespaces, and runs the plugin inside the host
one, either in-process (:func:`call_plugin`) or as an executable through ``nsenter``
(:func:`exec_plugin_in`). That keeps the machine's interfaces, routes and firewall untouched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from ..host import create_netns, list_netns, netns_path, remove_netns, run_in_netns
from ..invoke import REGISTRY, run_in_process
from ._concurrency import Pausable, at_once, paused_burst, wait_for
from ._forward import forward_into
from ._lab import Lab, LabError, LabOptions
from ._servers import (
    ETCD_BINARY,
    KUBERNETES_VERSION,
    NAD_CRD,
    APIStatusError,
    EtcdServer,
    KubeAPIServer,
    ServerError,
    free_port,
    kube_apiserver_binary,
    kubectl_binary,
    kubernetes_cache_dir,
    make_test_pki,
)
from ._traffic import LiveTraffic, PingStats, TrafficReport

T = TypeVar("T")

#: Every test object's name starts with this.
PREFIX = "pyt"

GO_PLUGIN_DIR = "/usr/lib/cni"


#: Every name :func:`unique_name` handed out in this process, so a leak check can tell this
#: run's objects from those of another test run on the same machine.
_ISSUED: set[str] = set()


def unique_name(kind: str = "") -> str:
    """A fresh name with the test prefix, short enough for an interface (<= 15 bytes)."""
    name = f"{PREFIX}{kind[:4]}{secrets.token_hex(4)}"
    _ISSUED.add(name)
    return name


def issued_here(obj_name: str) -> bool:
    """Whether ``obj_name`` is (or is derived from) a name this process handed out."""
    return any(obj_name.startswith(name) for name in _ISSUED)


@contextmanager
def temp_netns(kind: str = "ns") -> Iterator[str]:
    """A fresh named netns; yields its path and always removes it."""
    name = unique_name(kind)
    path = create_netns(name)
    try:
        yield path
    finally:
        remove_netns(name)


@dataclass
class PluginCall:
    """What a plugin call printed and returned."""

    status: int
    stdout: bytes
    stderr: bytes = b""

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def ok(self) -> Any:
        """The parsed output; AssertionError with the output if the call failed."""
        if self.status != 0:
            raise AssertionError(f"plugin failed ({self.status}): {self.stdout!r} {self.stderr!r}")
        return self.json


def cni_env(
    command: str,
    *,
    container_id: str = "",
    netns: str = "",
    ifname: str = "eth0",
    args: str = "",
    path: str = GO_PLUGIN_DIR,
) -> dict[str, str]:
    """The CNI_* environment for one call (empty values are left out)."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": path,
    }
    return {k: v for k, v in env.items() if v}


def call_plugin(
    host_netns: str,
    type_name: str,
    env: Mapping[str, str],
    conf: Mapping[str, Any] | bytes,
) -> PluginCall:
    """Run pycni plugin ``type_name`` in-process, with ``host_netns`` as its host namespace."""
    if type_name not in REGISTRY:
        raise LookupError(f"pycni has no plugin {type_name!r}")
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    status, out = run_in_netns(host_netns, run_in_process, type_name, dict(env), stdin)
    return PluginCall(status, out)


def exec_plugin_in(
    host_netns: str,
    executable: str,
    env: Mapping[str, str],
    conf: Mapping[str, Any] | bytes,
    timeout: float = 60,
) -> PluginCall:
    """Run a plugin executable (Go's or ours) with ``host_netns`` as its host namespace."""
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    full_env.update(env)
    proc = subprocess.run(
        ["nsenter", f"--net={host_netns}", "--", executable],
        input=stdin,
        env=full_env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return PluginCall(proc.returncode, proc.stdout, proc.stderr)


def ip_json(netns: str | None, *args: str) -> Any:
    """``ip -j ARGS`` in ``netns`` (None: this namespace), parsed; for assertions."""
    cmd = ["ip", "-j", *args] if netns is None else ["nsenter", f"--net={netns}", "--", "ip",
                                                     "-j", *args]
    out = subprocess.run(cmd, capture_output=True, check=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def ns_run(netns: str, *argv: str, timeout: float = 30, check: bool = False
           ) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``netns`` (ping, nft, iptables-save...)."""
    return subprocess.run(["nsenter", f"--net={netns}", "--", *argv], capture_output=True,
                          text=True, timeout=timeout, check=check)


def pings(netns: str, address: str, *, timeout: float = 0, wait: int = 1) -> bool:
    """One ping from ``netns`` to ``address`` gets a reply within ``wait`` seconds; with a
    ``timeout``, pinged again until one does or ``timeout`` seconds have passed (routes and
    neighbours settle asynchronously). ping picks the family from the address."""
    def once() -> bool:
        return ns_run(netns, "ping", "-c1", f"-W{wait}", address).returncode == 0
    return bool(wait_for(once, timeout=timeout)) if timeout else once()


#: A stdlib-only unix socket client for a process that cannot import pycni: sends argv[2]
#: (hex) on the socket argv[1], shuts its side, prints (hex) what it receives until the peer
#: closes. A peer that closes with our request unread resets the connection after its
#: answer (unix sockets report ECONNRESET then, not the end of the stream).
_RAW_CLIENT = """
import socket, sys
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.settimeout(30)
c.connect(sys.argv[1])
try:
    c.sendall(bytes.fromhex(sys.argv[2]))
    c.shutdown(socket.SHUT_WR)
except OSError:
    pass
data = b""
try:
    while chunk := c.recv(65536):
        data += chunk
except ConnectionResetError:
    pass
print(data.hex())
"""


def unix_exchange_as_nobody(socket_path: str, request: bytes) -> bytes:
    """Send ``request`` on a unix socket as uid/gid 65534; what the server answered."""
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "/usr/bin/python3", "-c", _RAW_CLIENT, socket_path, request.hex()],
                          capture_output=True, text=True, timeout=60, check=True)
    return bytes.fromhex(proc.stdout.strip())


def leftovers(*, mine: bool = False) -> list[str]:
    """Test objects left in the machine's namespace: netns and links with the prefix.

    ``mine``: only those named by this process (another test run may be going on beside it).
    """
    names = [("netns", n) for n in list_netns()]
    names += [("link", link.get("ifname", "")) for link in ip_json(None, "link", "show")]
    return [f"{kind} {n}" for kind, n in names
            if n.startswith(PREFIX) and (not mine or issued_here(n))]


__all__ = [
    "ETCD_BINARY",
    "GO_PLUGIN_DIR",
    "KUBERNETES_VERSION",
    "NAD_CRD",
    "PREFIX",
    "APIStatusError",
    "EtcdServer",
    "KubeAPIServer",
    "Lab",
    "LabError",
    "LabOptions",
    "LiveTraffic",
    "Pausable",
    "PingStats",
    "PluginCall",
    "ServerError",
    "TrafficReport",
    "at_once",
    "call_plugin",
    "cni_env",
    "exec_plugin_in",
    "forward_into",
    "free_port",
    "ip_json",
    "issued_here",
    "kube_apiserver_binary",
    "kubectl_binary",
    "kubernetes_cache_dir",
    "leftovers",
    "make_test_pki",
    "netns_path",
    "ns_run",
    "paused_burst",
    "pings",
    "temp_netns",
    "unique_name",
    "unix_exchange_as_nobody",
    "wait_for",
]
