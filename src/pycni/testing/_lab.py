"""``pycni lab``: a real multi-node pycni cluster on one machine, made of network namespaces.

Layout (``P`` is the lab's prefix)::

    P-ul                the underlay segment: bridge "ul0" 10.99.0.254/24, and the
                        datastore (etcd, and kube-apiserver) listening on that address
    P-n1 ... P-nN       the nodes: "eth0" 10.99.0.<i>/24 on the segment, a real
                        ``pycni agent --cluster-config`` process each (own socket, state and
                        CNI config directories under the lab directory)
    P-n1-p1 ...         the pods: attached by ``pycni add`` run in the node's namespace
                        with the node's CNI config and the node's plugin shims, the path a
                        container runtime takes

Nothing is made in the machine's own namespace. The lab directory (``/run/pycni-lab`` by
default) holds ``state.json``, which lists every object as soon as it exists, so
``pycni lab down`` removes them all, also after a failed ``up``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..host import (
    add_address,
    attach_port,
    create_netns,
    create_veth,
    ensure_bridge,
    netns_path,
    open_netns,
    remove_netns,
    run_in_netns,
    set_link_up,
)
from ._servers import EtcdServer, KubeAPIServer

DEFAULT_DIR = "/run/pycni-lab"
DEFAULT_PREFIX = "pycnilab"
UNDERLAY = ipaddress.ip_network("10.99.0.0/24")
SERVER_ADDRESS = "10.99.0.254"
CLUSTER_CIDR = "10.244.0.0/16"
DATASTORES = ("etcd", "kubernetes")
BACKENDS = ("vxlan", "host-gw")
#: Seconds ``up`` waits for every node to be ready and to know every peer.
READY_TIMEOUT = 60.0
#: The CNI network name in every node's config.
NETWORK = "pycni"


class LabError(RuntimeError):
    """The lab could not be built, or is not there."""


def pycni_argv() -> list[str]:
    """How to run the ``pycni`` command of this installation."""
    return [sys.executable, "-m", "pycni.cli"]


@dataclass(frozen=True)
class LabOptions:
    """What ``pycni lab up`` builds."""

    nodes: int = 3
    pods_per_node: int = 2
    datastore: str = "etcd"
    backend: str = "vxlan"
    prefix: str = DEFAULT_PREFIX
    directory: str = DEFAULT_DIR
    reconcile_interval: float = 2.0
    lease_ttl: int = 15

    def check(self) -> None:
        """LabError naming the option that is out of range."""
        if not 1 <= self.nodes <= 200:
            raise LabError(f"--nodes must be between 1 and 200, got {self.nodes}")
        if not 0 <= self.pods_per_node <= 200:
            raise LabError(f"--pods-per-node must be between 0 and 200, got "
                           f"{self.pods_per_node}")
        if self.datastore not in DATASTORES:
            raise LabError(f"--datastore must be one of {', '.join(DATASTORES)}, got "
                           f"{self.datastore!r}")
        if self.backend not in BACKENDS:
            raise LabError(f"--backend must be one of {', '.join(BACKENDS)}, got "
                           f"{self.backend!r}")
        if not self.prefix or not self.prefix.replace("-", "").isalnum() or \
                self.prefix.lower() != self.prefix:
            raise LabError(f"--prefix must be lower-case letters, digits and '-', got "
                           f"{self.prefix!r}")


class Lab:
    """A lab described by its ``state.json``; :meth:`up` builds one, :meth:`down` removes it."""

    def __init__(self, directory: str = DEFAULT_DIR) -> None:
        self.dir = Path(directory)
        self.state: dict[str, Any] = {}
        #: The agents this process started (so their exit status is collected).
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        #: The servers this process started, by name.
        self._servers: dict[str, EtcdServer | KubeAPIServer] = {}
        state_file = self.dir / "state.json"
        if state_file.exists():
            self.state = json.loads(state_file.read_text())

    # -- state -----------------------------------------------------------------------------

    def _save(self) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        tmp.replace(self.dir / "state.json")

    @property
    def exists(self) -> bool:
        """A lab is recorded in the directory."""
        return bool(self.state)

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The nodes' records (name, netns, underlay, dir, agent pid)."""
        nodes: list[dict[str, Any]] = self.state.get("nodes", [])
        return nodes

    @property
    def pods(self) -> list[dict[str, Any]]:
        """The pods' records (name, node, netns, ips)."""
        pods: list[dict[str, Any]] = self.state.get("pods", [])
        return pods

    def node(self, name: str) -> dict[str, Any]:
        """One node's record by name."""
        for node in self.nodes:
            if node["name"] == name:
                return node
        raise LabError(f"no node {name!r} in the lab")

    # -- up --------------------------------------------------------------------------------

    @classmethod
    def up(cls, options: LabOptions, echo: Callable[[str], None] = lambda _: None) -> Lab:
        """Build the lab; on any failure everything made so far is removed."""
        options.check()
        directory = Path(options.directory)
        if (directory / "state.json").exists():
            raise LabError(f"a lab is already recorded in {directory}: "
                           f"run 'pycni lab down' first")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lab = cls(str(directory))
        # unix socket paths have 108 bytes: the agents' sockets live in a short directory
        run_dir = Path("/run") / f"{options.prefix}.lab"
        run_dir.mkdir(mode=0o700, exist_ok=True)
        lab.state = {"prefix": options.prefix, "runDir": str(run_dir),
                     "datastore": options.datastore,
                     "backend": options.backend, "clusterCIDR": CLUSTER_CIDR,
                     "namespaces": [], "nodes": [], "pods": [], "servers": {}}
        lab._save()
        try:
            lab._build(options, echo)
        except BaseException:
            lab.down()
            raise
        return lab

    def _netns(self, name: str) -> str:
        path = create_netns(name)
        self.state["namespaces"].append(name)
        self._save()
        run_in_netns(path, set_link_up, "lo")
        return path

    def _build(self, options: LabOptions, echo: Callable[[str], None]) -> None:
        prefix = options.prefix
        underlay = self._netns(f"{prefix}-ul")
        self.state["underlay"] = {"netns": f"{prefix}-ul", "bridge": "ul0",
                                  "cidr": str(UNDERLAY), "address": SERVER_ADDRESS}

        def segment() -> None:
            ensure_bridge("ul0")
            add_address("ul0", ipaddress.ip_interface(f"{SERVER_ADDRESS}/24"), exist_ok=True)
            set_link_up("ul0")

        run_in_netns(underlay, segment)
        hosts = list(UNDERLAY.hosts())
        for i in range(1, options.nodes + 1):
            self._add_node(options, i, str(hosts[i - 1]), underlay)
        echo(f"underlay {UNDERLAY} in netns {prefix}-ul, {options.nodes} nodes")
        self._start_datastore(options, underlay)
        echo(f"datastore {options.datastore} at {self.state['servers']['etcd']['url']}")
        for node in self.nodes:
            self._write_cluster_config(options, node)
            self.start_agent(node["name"])
        self.wait_ready(READY_TIMEOUT)
        echo(f"agents ready (backend {options.backend})")
        for node in self.nodes:
            for j in range(1, options.pods_per_node + 1):
                self.add_pod(node["name"], f"{node['name']}-p{j}")
        echo(f"{len(self.pods)} pods up")

    def _add_node(self, options: LabOptions, index: int, address: str, underlay: str) -> None:
        name = f"{options.prefix}-n{index}"
        path = self._netns(name)
        node_dir = self.dir / name
        for sub in ("", "net.d", "bin", "cache", "ipam"):
            (node_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        (Path(self.state["runDir"]) / f"n{index}").mkdir(mode=0o700)
        port = f"n{index}"
        fd = open_netns(underlay)
        try:
            run_in_netns(path, create_veth, "eth0", fd, peer_name=port)
        finally:
            os.close(fd)

        def attach() -> None:
            attach_port(port, "ul0")
            set_link_up(port)

        run_in_netns(underlay, attach)

        def configure() -> None:
            add_address("eth0", ipaddress.ip_interface(f"{address}/24"))
            set_link_up("eth0")

        run_in_netns(path, configure)
        socket_path = str(Path(self.state["runDir"]) / f"n{index}" / "agent.sock")
        self.nodes.append({"name": name, "netns": name, "underlay": address,
                           "dir": str(node_dir), "socket": socket_path, "pid": None})
        self._save()
        _run([*pycni_argv(), "install", "--bin-dir", str(node_dir / "bin"),
              "--socket", socket_path], what=f"installing the plugins of {name}")

    def _start_datastore(self, options: LabOptions, underlay: str) -> None:
        etcd = EtcdServer(host=SERVER_ADDRESS)
        self._servers["etcd"] = etcd
        self.state["servers"]["etcd"] = {"dir": str(etcd.dir), "url": etcd.url, "pid": None}
        self._save()
        run_in_netns(underlay, etcd.start)
        self.state["servers"]["etcd"]["pid"] = etcd.pid
        self._save()
        if options.datastore == "etcd":
            config = {"Network": CLUSTER_CIDR, "SubnetLen": 24,
                      "Backend": {"Type": options.backend}}
            run_in_netns(underlay, etcd.put, "/pycni/network/config", json.dumps(config))
            return
        api = KubeAPIServer(etcd.url, host=SERVER_ADDRESS)
        self._servers["apiserver"] = api
        self.state["servers"]["apiserver"] = {"dir": str(api.dir), "url": api.url,
                                              "kubeconfig": api.kubeconfig, "pid": None,
                                              "token": api.token, "ca": api.ca_file}
        self._save()
        run_in_netns(underlay, api.start)
        self.state["servers"]["apiserver"]["pid"] = api.pid
        self._save()
        network = ipaddress.ip_network(CLUSTER_CIDR)
        subnets = network.subnets(new_prefix=24)
        next(subnets)  # 10.244.0.0/24 is left unused, as kube-controller-manager does
        for node in self.nodes:
            cidr = str(next(subnets))
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node["name"]},
                    "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}
            run_in_netns(underlay, api.request, "POST", "/api/v1/nodes", body)

    def _write_cluster_config(self, options: LabOptions, node: dict[str, Any]) -> None:
        node_dir = Path(node["dir"])
        servers = self.state["servers"]
        config: dict[str, Any] = {
            "datastore": options.datastore, "nodeName": node["name"],
            "backend": {"type": options.backend}, "clusterCIDR": CLUSTER_CIDR,
            "underlayInterface": "eth0", "reconcileInterval": options.reconcile_interval,
            "confDir": str(node_dir / "net.d"), "ipamDataDir": str(node_dir / "ipam"),
        }
        if options.datastore == "etcd":
            config.update(etcdEndpoints=[servers["etcd"]["url"]], leaseTTL=options.lease_ttl)
        else:
            config["kubeconfig"] = servers["apiserver"]["kubeconfig"]
        (node_dir / "cluster.json").write_text(json.dumps(config, indent=2) + "\n")

    # -- agents ----------------------------------------------------------------------------

    def agent_argv(self, name: str, *extra: str) -> list[str]:
        """The command line of a node's agent."""
        node = self.node(name)
        node_dir = Path(node["dir"])
        return [*pycni_argv(), "agent", "--socket", node["socket"],
                "--metrics-address", "127.0.0.1:9655",
                "--cluster-config", str(node_dir / "cluster.json"),
                "--cluster-status", str(node_dir / "status.json"), *extra]

    def start_agent(self, name: str, *extra: str) -> int:
        """Start the node's agent in its namespace (in the background); its pid."""
        node = self.node(name)
        log = Path(node["dir"]) / "agent.log"
        with open(log, "ab") as out:
            proc: subprocess.Popen[bytes] = run_in_netns(
                netns_path(node["netns"]), subprocess.Popen, self.agent_argv(name, *extra),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        node["pid"] = proc.pid
        self._procs[proc.pid] = proc
        self._save()
        return proc.pid

    def stop_agent(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the node's agent and wait until it is gone."""
        node = self.node(name)
        pid = node.get("pid")
        if pid:
            _stop_pid(pid, sig, timeout, self._procs.pop(pid, None))
        node["pid"] = None
        self._save()

    def node_status(self, name: str) -> dict[str, Any]:
        """The node controller's last status (``status.json``), or {} before the first."""
        try:
            status: dict[str, Any] = json.loads(
                (Path(self.node(name)["dir"]) / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return status

    def conflist(self, name: str) -> Path:
        """Where the node's agent writes its CNI config."""
        return Path(self.node(name)["dir"]) / "net.d" / "10-pycni.conflist"

    def wait_ready(self, timeout: float) -> None:
        """Wait until every node wrote its CNI config and reconciled with every other node."""
        deadline = time.monotonic() + timeout
        names = [n["name"] for n in self.nodes]
        while True:
            waiting = []
            for name in names:
                status = self.node_status(name)
                peers = set(status.get("peers", {}))
                if not (self.conflist(name).exists() and status.get("phase") == "ready"
                        and peers >= set(names) - {name}):
                    waiting.append((name, status.get("last_error")))
            if not waiting:
                return
            for node in self.nodes:
                proc = self._procs.get(node.get("pid") or 0)
                if proc is not None and proc.poll() is not None:
                    raise LabError(f"the agent of {node['name']} exited with "
                                   f"{proc.returncode}:\n{_tail(Path(node['dir']) / 'agent.log')}")
            if time.monotonic() > deadline:
                detail = "; ".join(f"{n}: {e or 'not ready'}" for n, e in waiting)
                raise LabError(f"nodes not ready within {timeout:.0f} s: {detail}")
            time.sleep(0.1)

    def leave(self, name: str) -> None:
        """The node leaves the cluster: its agent stops and uninstalls, (kubernetes) its Node
        object is deleted."""
        node = self.node(name)
        self.stop_agent(name)
        _run([*pycni_argv(), "cluster", "uninstall", "--cluster-config",
              str(Path(node["dir"]) / "cluster.json")], netns=netns_path(node["netns"]),
             what=f"uninstalling {name}")
        api = self.state["servers"].get("apiserver")
        if api is not None:
            underlay = netns_path(self.state["underlay"]["netns"])
            run_in_netns(underlay, _kube_delete, api, f"/api/v1/nodes/{name}")

    # -- pods ------------------------------------------------------------------------------

    def pod_env(self, node_name: str) -> dict[str, str]:
        """The environment ``pycni add``/``del`` runs with for pods of ``node_name``."""
        node_dir = Path(self.node(node_name)["dir"])
        return {**os.environ, "NETCONFPATH": str(node_dir / "net.d"),
                "CNI_PATH": str(node_dir / "bin"),
                "PYCNI_CACHE_DIR": str(node_dir / "cache")}

    def add_pod(self, node_name: str, pod: str) -> dict[str, Any]:
        """Create a pod namespace and attach it as a runtime would, in the node's namespace."""
        node = self.node(node_name)
        self._netns(pod)
        record = {"name": pod, "node": node_name, "netns": pod, "ips": []}
        self.pods.append(record)
        self._save()
        out = _run([*pycni_argv(), "add", NETWORK, netns_path(pod), "--json"],
                   netns=netns_path(node["netns"]), env=self.pod_env(node_name),
                   what=f"attaching pod {pod}")
        result = json.loads(out)
        record["ips"] = [ip["address"].split("/")[0] for ip in result.get("ips", [])]
        self._save()
        return record

    def ping(self, pod: str, address: str, count: int = 1, timeout: float = 1.0) -> bool:
        """True if ``address`` answers a ping from ``pod``."""
        proc = run_in_netns(netns_path(pod), subprocess.run,
                            ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout),
                             "-i", "0.2", address], capture_output=True, check=False)
        return bool(proc.returncode == 0)

    def reachability(self) -> dict[str, dict[str, bool]]:
        """For each pod, whether each other pod answers a ping."""
        return {p["name"]: {q["name"]: self.ping(p["name"], q["ips"][0], count=3)
                            for q in self.pods if q is not p and q["ips"]}
                for p in self.pods}

    # -- status ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """``lab status --json``: the nodes and the pods."""
        nodes = []
        for node in self.nodes:
            status = self.node_status(node["name"])
            nodes.append({"name": node["name"], "netns": node["netns"],
                          "subnets": status.get("subnets", []), "underlay": node["underlay"],
                          "backend": self.state.get("backend"),
                          "peers": sorted(status.get("peers", {})),
                          "phase": status.get("phase", "down" if not node.get("pid")
                                              else "starting"),
                          "agentPid": node.get("pid")})
        pods = [{"name": p["name"], "node": p["node"], "netns": p["netns"], "ips": p["ips"]}
                for p in self.pods]
        return {"datastore": self.state.get("datastore"), "backend": self.state.get("backend"),
                "nodes": nodes, "pods": pods}

    # -- down ------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything the lab made (each step tolerates what is already gone)."""
        removed: list[str] = []
        for node in self.nodes:
            if node.get("pid"):
                with contextlib.suppress(OSError):
                    _stop_pid(node["pid"], signal.SIGTERM, 15.0,
                              self._procs.pop(node["pid"], None))
                removed.append(f"agent {node['name']}")
                node["pid"] = None
        for name in ("apiserver", "etcd"):
            server = self.state.get("servers", {}).get(name)
            if server is None:
                continue
            if name in self._servers:
                self._servers.pop(name).stop()
            elif server.get("pid"):
                with contextlib.suppress(OSError):
                    _stop_pid(server["pid"], signal.SIGTERM, 15.0, None)
            shutil.rmtree(server["dir"], ignore_errors=True)
            removed.append(name)
        for name in reversed(self.state.get("namespaces", [])):
            remove_netns(name)
            removed.append(f"netns {name}")
        if self.state.get("runDir"):
            shutil.rmtree(self.state["runDir"], ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state = {}
        return removed


def _kube_delete(api: dict[str, Any], path: str) -> None:
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=api["ca"])
    # The lab's own https:// API server URL, from its state file.
    request = urllib.request.Request(api["url"] + path, method="DELETE",  # noqa: S310
                                     headers={"Authorization": f"Bearer {api['token']}"})
    with urllib.request.urlopen(request, context=context, timeout=10):  # noqa: S310
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, sig: int, timeout: float,
              proc: subprocess.Popen[bytes] | None) -> None:
    """Signal ``pid`` (a process this lab started) and wait for it to go, SIGKILL after
    ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _pid_alive(pid):
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if proc is not None:
                proc.wait()
            return
        time.sleep(0.05)


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _run(argv: list[str], *, what: str, netns: str | None = None,
         env: dict[str, str] | None = None) -> str:
    """Run ``argv`` (in ``netns``), its stdout; LabError with its stderr when it fails."""
    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                              timeout=120)

    proc = run_in_netns(netns, call) if netns else call()
    if proc.returncode != 0:
        raise LabError(f"{what} failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


__all__ = ["BACKENDS", "CLUSTER_CIDR", "DATASTORES", "DEFAULT_DIR", "DEFAULT_PREFIX", "Lab",
           "LabError", "LabOptions", "pycni_argv"]
