"""Run Debian's podman (4.3, CNI backend) in a sandbox, on a chosen CNI plugin directory.

Nothing under /etc changes and the machine's namespace sees none of it:

- ``CONTAINERS_CONF``/``CONTAINERS_STORAGE_CONF`` point podman at config and ``vfs`` storage
  (no overlay mounts) in a private temporary directory, with ``network_backend = "cni"``,
  ``cni_plugin_dirs`` = the directory under test and a private ``network_config_dir``;
- every podman command runs through ``nsenter --net=<host netns>``, so the bridges, the
  host veth ends and the netfilter rules the plugins make land in a test "host" namespace;
- containers run from a busybox rootfs (``--rootfs``), so no image registry is needed.

Some state podman and the plugins keep is not configurable in a conflist that podman
generates: container netns files (``/run/netns/netns-<uuid>``), libcni's result cache
(``/var/lib/cni/results``) and the default IPAM/firewall data dirs
(``/var/lib/cni/{networks,firewall}/<network>``). They are keyed by our unique network
names and removed by :meth:`Podman.close`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.host import run_in_netns
from pycni.testing import ns_run, temp_netns, unique_name, wait_for

CNI_STATE = Path("/var/lib/cni")
RUN_NETNS = Path("/run/netns")
#: The request every container's ``httpd`` answers with its own hostname (the short ID).
HOSTNAME_REQUEST = b"GET /hostname HTTP/1.0\r\n\r\n"


def missing_tools() -> list[str]:
    """The executables this suite needs that are not installed."""
    return [t for t in ("podman", "runc", "conmon", "busybox", "nsenter")
            if shutil.which(t) is None and not Path("/usr/bin", t).exists()]


def install_pycni(bin_dir: Path, socket_path: Path) -> None:
    """``pycni install --bin-dir BIN_DIR``: the executables podman will run. They forward to
    an agent on ``socket_path`` when one listens there and run in-process otherwise (a
    private socket path, so that no agent another test runs answers them)."""
    subprocess.run([sys.executable, "-m", "pycni.cli", "install", "--bin-dir", str(bin_dir),
                    "--socket", str(socket_path)],
                   check=True, capture_output=True, timeout=120)


@contextmanager
def pycni_agent(host_ns: str, socket_path: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``pycni agent`` in ``host_ns`` (a node runs it beside the runtime), logging its calls
    (JSON lines) to ``log``; stopped afterwards."""
    with log.open("wb") as out:
        agent = subprocess.Popen(
            ["nsenter", f"--net={host_ns}", "--", sys.executable, "-m", "pycni.cli", "agent",
             "--socket", str(socket_path), "--metrics-address", "off"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: socket_path.exists() or agent.poll() is not None, timeout=30)
        assert agent.poll() is None, log.read_text()
        yield agent
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=40)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def agent_calls(log: Path) -> list[tuple[str, str]]:
    """(plugin, command) of each call the agent served, from its log."""
    calls = []
    for line in log.read_text().splitlines():
        with suppress(ValueError):
            entry = json.loads(line)
            if entry.get("msg") == "call":
                calls.append((entry["plugin"], entry["command"]))
    return calls


def make_rootfs(root: Path) -> None:
    """A busybox root filesystem: ``bin/busybox`` and a relative symlink per applet."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(busybox, bin_dir / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")
    (root / "etc").mkdir()


def _ulimit(kind: int, name: str, want: int) -> str:
    # runc sets every rlimit in the OCI spec and may lower but never raise a hard limit, and
    # podman's defaults for nofile/nproc are above what this sandbox allows.
    hard = resource.getrlimit(kind)[1]
    value = want if hard == resource.RLIM_INFINITY else min(want, hard)
    return f"{name}={value}:{value}"


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


@dataclass
class Network:
    """A podman network made by :meth:`Podman.create_network`."""

    name: str
    bridge: str
    conflist: Path

    def config(self) -> Any:
        """The conflist podman wrote (parsed)."""
        return json.loads(self.conflist.read_text())


@dataclass
class Podman:
    """podman confined to a private directory and a test host namespace."""

    base: Path
    host_ns: str
    plugin_dir: str
    networks: list[Network] = field(default_factory=list)
    netns_before: set[str] = field(default_factory=set)

    @property
    def config_dir(self) -> Path:
        """Where podman keeps its network conflists."""
        return self.base / "net"

    def write_config(self) -> None:
        """containers.conf and storage.conf for this sandbox."""
        for sub in ("net", "root", "runroot", "tmp", "xdg"):
            (self.base / sub).mkdir(mode=0o700, exist_ok=True)
        ulimits = [_ulimit(resource.RLIMIT_NOFILE, "nofile", 4096),
                   _ulimit(resource.RLIMIT_NPROC, "nproc", 4096)]
        (self.base / "containers.conf").write_text(
            "[containers]\n"
            f"default_ulimits = {_toml_list(ulimits)}\n"
            "[engine]\n"
            # crun 1.8 rejects this machine's cgroup layout; runc runs.
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f"events_logfile_path = {json.dumps(str(self.base / 'events.log'))}\n"
            f"tmp_dir = {json.dumps(str(self.base / 'tmp'))}\n"
            "[network]\n"
            'network_backend = "cni"\n'
            f"cni_plugin_dirs = {_toml_list([self.plugin_dir])}\n"
            f"network_config_dir = {json.dumps(str(self.config_dir))}\n")
        (self.base / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f"graphroot = {json.dumps(str(self.base / 'root'))}\n"
            f"runroot = {json.dumps(str(self.base / 'runroot'))}\n")

    def env(self) -> dict[str, str]:
        """The environment podman runs with."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CNI_", "CONTAINER", "XDG_"))}
        env.update(CONTAINERS_CONF=str(self.base / "containers.conf"),
                   CONTAINERS_STORAGE_CONF=str(self.base / "storage.conf"),
                   XDG_RUNTIME_DIR=str(self.base / "xdg"),
                   TMPDIR=str(self.base / "tmp"))
        return env

    def run(self, *args: str, check: bool = True, stdin: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """``podman ARGS`` inside the host namespace."""
        argv = ["nsenter", f"--net={self.host_ns}", "--", "podman",
                "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"),
                "--tmpdir", str(self.base / "tmp"), "--events-backend", "file", *args]
        proc = subprocess.run(argv, input=stdin, env=self.env(), capture_output=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr.decode(errors='replace')}"
                                 f"{proc.stdout.decode(errors='replace')}")
        return proc

    def out(self, *args: str) -> str:
        """stdout of a successful ``podman ARGS``, stripped."""
        return self.run(*args).stdout.decode().strip()

    def json(self, *args: str) -> Any:
        """Parsed JSON stdout of ``podman ARGS``."""
        return json.loads(self.run(*args).stdout)

    def create_network(self, *args: str) -> Network:
        """``podman network create ARGS NAME``; the generated conflist's bridge gets a test
        name (podman 4.3 has no ``--interface-name``), everything else stays as podman wrote
        it."""
        name = unique_name("net")
        self.run("network", "create", *args, name)
        conflist = self.config_dir / f"{name}.conflist"
        network = Network(name, unique_name("br"), conflist)
        self.networks.append(network)
        config = network.config()
        bridges = [p for p in config["plugins"] if p["type"] == "bridge"]
        assert len(bridges) == 1, config
        bridges[0]["bridge"] = network.bridge
        conflist.write_text(json.dumps(config, indent=3))
        return network

    def start(self, network: Network, *args: str, cmd: tuple[str, ...] = ()) -> str:
        """A detached container from the busybox rootfs on ``network``; its full ID.

        By default it runs ``httpd`` on port 80 serving /etc, so GET /hostname answers with
        the container's short ID.
        """
        command = cmd or ("/bin/httpd", "-f", "-p", "80", "-h", "/etc")
        return self.out("run", "-d", "--network", network.name, *args,
                        "--rootfs", str(self.base / "rootfs"), *command)

    def inspect(self, cid: str) -> Any:
        """``podman inspect`` of one container."""
        found = self.json("inspect", cid)
        assert len(found) == 1
        return found[0]

    def sandbox(self, cid: str) -> str:
        """The container's network namespace path."""
        path: str = self.inspect(cid)["NetworkSettings"]["SandboxKey"]
        return path

    def exec(self, cid: str, *argv: str, stdin: bytes | None = None
             ) -> subprocess.CompletedProcess[bytes]:
        """``podman exec`` (``-i`` when there is input); not checked."""
        flags = ("-i",) if stdin is not None else ()
        return self.run("exec", *flags, cid, *argv, stdin=stdin, check=False, timeout=60)

    def calls(self) -> list[tuple[str, str, str]]:
        """(type, CNI_COMMAND, CNI_NETNS) of every plugin call, for a ``logged`` sandbox."""
        log = self.base / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        calls = []
        for line in lines:
            plugin, command, netns = [*line.split(" ", 2), "", ""][:3]
            calls.append((plugin, command, netns))
        return calls

    def close(self) -> None:
        """Remove every container, network and bit of state this sandbox made."""
        self.run("rm", "-f", "-a", "-t", "0", check=False)
        for network in self.networks:
            self.run("network", "rm", "-f", network.name, check=False)
        # podman unmounts each container's /dev/shm tmpfs when it cleans up; a crash could
        # leave one behind, and rmtree must not descend into a mount.
        for mount in _mounts_under(self.base):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        for name in set(_podman_netns()) - self.netns_before:
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
        for network in self.networks:
            for sub in ("networks", "firewall"):
                shutil.rmtree(CNI_STATE / sub / network.name, ignore_errors=True)
            for cached in cache_entries(network.name):
                cached.unlink(missing_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base) + "/"
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def _podman_netns() -> list[str]:
    """podman 4.3 names each container's namespace ``netns-<uuid>``."""
    with suppress(FileNotFoundError):
        return [p.name for p in RUN_NETNS.iterdir() if p.name.startswith("netns-")]
    return []


def cache_entries(network: str) -> list[Path]:
    """libcni's cached results for ``network`` (``results/<net>-<container>-<ifname>``)."""
    with suppress(FileNotFoundError):
        return sorted((CNI_STATE / "results").glob(f"{network}-*"))
    return []


def reservations(network: str) -> list[str]:
    """host-local's reserved addresses for ``network`` (its lock and cursor files aside)."""
    with suppress(FileNotFoundError):
        return sorted(p.name for p in (CNI_STATE / "networks" / network).iterdir()
                      if p.name != "lock" and not p.name.startswith("last_reserved_ip"))
    return []


def log_calls(plugin_dir: str, wrap_dir: Path, log: Path) -> None:
    """Fill ``wrap_dir`` with one wrapper per plugin in ``plugin_dir`` that appends
    "TYPE COMMAND CNI_NETNS" to ``log`` and then execs the real plugin (stdin untouched)."""
    wrap_dir.mkdir()
    for exe in sorted(Path(plugin_dir).iterdir()):
        if exe.name.startswith(".") or not os.access(exe, os.X_OK):
            continue
        wrapper = wrap_dir / exe.name
        wrapper.write_text(
            "#!/bin/sh\n"
            f'printf \'%s %s %s\\n\' {exe.name} "$CNI_COMMAND" "$CNI_NETNS" >> {log}\n'
            f'exec {exe} "$@"\n')
        wrapper.chmod(0o755)


@contextmanager
def podman_sandbox(plugin_dir: str | None, *, logged: bool = False, agent: bool = False
                   ) -> Iterator[Podman]:
    """A :class:`Podman` on ``plugin_dir`` (None: pycni's executables, installed into the
    sandbox with ``pycni install``); everything is removed afterwards, even on failure.

    ``logged``: podman runs the plugins through :func:`log_calls` wrappers, logging to
    ``<base>/calls.log``. ``agent``: a ``pycni agent`` serves pycni's executables (log:
    ``<base>/agent.log``, see :func:`agent_calls`).
    """
    base = Path(tempfile.mkdtemp(prefix="pytpod"))  # mode 0700, as the agent's socket needs
    try:
        if plugin_dir is None:
            install_pycni(base / "bin", base / "agent.sock")
            plugin_dir = str(base / "bin")
        if logged:
            log_calls(plugin_dir, base / "logged", base / "calls.log")
            plugin_dir = str(base / "logged")
        make_rootfs(base / "rootfs")
        with temp_netns("h") as host_ns:
            # A node's loopback is up; a fresh namespace's is not.
            ns_run(host_ns, "ip", "link", "set", "lo", "up", check=True)
            podman = Podman(base, host_ns, plugin_dir, netns_before=set(_podman_netns()))
            podman.write_config()
            with ExitStack() as stack:
                if agent:
                    stack.enter_context(pycni_agent(host_ns, base / "agent.sock",
                                                    base / "agent.log"))
                # Registered last, so it runs first: containers go while the agent serves.
                stack.callback(podman.close)
                yield podman
    finally:
        shutil.rmtree(base, ignore_errors=True)


def http_hostname_in_ns(netns: str, host: str, port: int) -> str:
    """GET /hostname from ``host:port``, connecting from inside ``netns``; the body."""

    def fetch() -> bytes:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect((host, port))
            sock.sendall(HOSTNAME_REQUEST)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks)

    return _body(run_in_netns(netns, fetch))


def http_hostname_from(podman: Podman, cid: str, host: str, port: int) -> str:
    """GET /hostname from ``host:port`` with busybox ``nc`` inside container ``cid``."""
    proc = podman.exec(cid, "nc", "-w", "10", host, str(port), stdin=HOSTNAME_REQUEST)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return _body(proc.stdout)


def _body(response: bytes) -> str:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0]
    assert status_line.startswith(b"HTTP/1."), response
    assert b" 200 " in status_line, response
    return body.decode().strip()


def netfilter_dump(netns: str) -> str:
    """Every netfilter rule in ``netns``: nft's ruleset (iptables-nft rules included)."""
    proc = subprocess.run(["nsenter", f"--net={netns}", "--", "nft", "list", "ruleset"],
                          capture_output=True, text=True, check=True, timeout=30)
    return proc.stdout
