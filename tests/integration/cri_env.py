"""A private containerd (Debian's 1.6) driven through its CRI, as the kubelet drives it.

Nothing under /etc or /var/lib/containerd changes and the machine's namespace sees none of it:

- containerd runs with its own ``--config``: root, state, sockets and ``opt`` under a private
  temporary directory; the CRI plugin's ``cni.bin_dir``/``cni.conf_dir`` point at the
  directories the test fills (``pycni install`` shims, a ``00-multus.conf``);
- it runs through ``nsenter --net=<host netns>``, so the plugins it execs (and the bridges and
  host veth ends they make) act on a test "host" namespace;
- the sandbox ("pause") image is built here from busybox-static and imported with ``ctr``
  (there is no registry to pull from).

Some state is not configurable: the pod netns containerd creates (``/var/run/netns/cni-<uuid>``,
unique names) and the shims' sockets under ``/run/containerd/s``; :meth:`Containerd.close`
removes every sandbox through the CRI and then any netns of ours that is left.

There is no ``crictl`` in Debian 12, so :class:`CRIClient` speaks the CRI v1 gRPC API itself,
with a minimal protobuf codec for the few messages the tests need (field numbers from
k8s.io/cri-api's ``api.proto``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycni.testing import wait_for

PAUSE_IMAGE = "docker.io/pycni-test/pause:1"
RUN_NETNS = Path("/var/run/netns")


def missing_tools() -> list[str]:
    """What this suite needs that is not installed (scripts/setup.sh installs it)."""
    missing = [t for t in ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "nsenter")
               if shutil.which(t) is None]
    if not Path("/bin/busybox").exists():
        missing.append("busybox-static")
    try:
        import grpc  # noqa: F401
    except ImportError:
        missing.append("grpcio (pip)")
    return missing


# -- protobuf wire format (only what the CRI messages below use) ---------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes, embedded message, map entry)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def field_str(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode()) if text else b""


def field_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def map_entry(number: int, key: str, value: str) -> bytes:
    return field_bytes(number, field_str(1, key) + field_str(2, value))


def decode(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values (ints for varints, bytes for length-delimited)."""
    fields: dict[int, list[Any]] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value = varint()
        elif wire == 2:
            size = varint()
            value, pos = data[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


# -- the CRI client -------------------------------------------------------------------------

@dataclass(frozen=True)
class PodMeta:
    """A sandbox's metadata, as the kubelet fills it from the Pod object."""

    name: str
    namespace: str
    uid: str
    attempt: int = 0


class CRIClient:
    """runtime.v1.RuntimeService over containerd's socket (unary calls, raw protobuf)."""

    def __init__(self, address: str) -> None:
        import grpc

        self._channel = grpc.insecure_channel(f"unix://{address}")

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: bytes, timeout: float = 120) -> dict[int, list[Any]]:
        """One RuntimeService RPC; its decoded response."""
        rpc = self._channel.unary_unary(f"/runtime.v1.RuntimeService/{method}",
                                        request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
        return decode(rpc(request, timeout=timeout))

    def version(self) -> str:
        """The runtime's name and version ("containerd 1.6.20~ds1")."""
        reply = self.call("Version", field_str(1, "v1"))
        return f"{reply[2][0].decode()} {reply[3][0].decode()}"

    def run_pod_sandbox(self, pod: PodMeta, log_dir: str) -> str:
        """RunPodSandbox (as the kubelet sends it, less what these tests do not need); the
        sandbox ID."""
        metadata = (field_str(1, pod.name) + field_str(2, pod.uid) + field_str(3, pod.namespace)
                    + field_int(4, pod.attempt))
        config = (field_bytes(1, metadata) + field_str(2, pod.name) + field_str(3, log_dir)
                  + map_entry(6, "io.kubernetes.pod.name", pod.name)
                  + map_entry(6, "io.kubernetes.pod.namespace", pod.namespace)
                  + map_entry(6, "io.kubernetes.pod.uid", pod.uid)
                  + field_bytes(8, b""))  # LinuxPodSandboxConfig: all defaults
        reply = self.call("RunPodSandbox", field_bytes(1, config))
        return str(reply[1][0].decode())

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", field_str(1, sandbox_id))

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("RemovePodSandbox", field_str(1, sandbox_id))

    def sandbox_status(self, sandbox_id: str) -> tuple[str, int, dict[str, Any]]:
        """(pod IP the runtime reports, state: 0 ready / 1 not ready, verbose info)."""
        reply = self.call("PodSandboxStatus", field_str(1, sandbox_id) + field_int(2, 1))
        status = decode(reply[1][0])
        network = decode(status.get(5, [b""])[0])
        ip = network[1][0].decode() if 1 in network else ""
        info: dict[str, Any] = {}
        for entry in reply.get(2, []):
            kv = decode(entry)
            info[kv[1][0].decode()] = json.loads(kv[2][0])
        return ip, int(status.get(3, [0])[0]), info

    def list_sandboxes(self) -> list[str]:
        """IDs of every sandbox the runtime knows."""
        reply = self.call("ListPodSandbox", b"")
        return [decode(item)[1][0].decode() for item in reply.get(1, [])]


def sandbox_netns(info: dict[str, Any]) -> str:
    """The pod's network namespace path, from PodSandboxStatus's verbose info."""
    namespaces = info["info"]["runtimeSpec"]["linux"]["namespaces"]
    return str(next(n["path"] for n in namespaces if n["type"] == "network"))


# -- the sandbox image ----------------------------------------------------------------------

def _tar_bytes(files: dict[str, tuple[bytes, int] | str]) -> bytes:
    """An uncompressed tar: path -> (content, mode) or a symlink target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, spec in files.items():
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if isinstance(spec, str):
                info.type, info.linkname = tarfile.SYMTYPE, spec
                tar.addfile(info)
            else:
                content, info.mode = spec
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def pause_image_tar(dest: Path) -> None:
    """An OCI image layout archive of a "pause" image: busybox-static sleeping forever
    (the sandbox container only holds the pod's namespaces)."""
    busybox = Path("/bin/busybox").read_bytes()
    layer = _tar_bytes({"bin/busybox": (busybox, 0o755), "bin/sleep": "busybox"})
    layer_gz = gzip.compress(layer, mtime=0)
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "2147483647"], "WorkingDir": "/"},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": blob(layer_gz), "size": len(layer_gz)}],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": blob(manifest), "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                        "org.opencontainers.image.ref.name": "1"}}]}).encode()
    files: dict[str, tuple[bytes, int] | str] = {
        "oci-layout": (b'{"imageLayoutVersion":"1.0.0"}', 0o644),
        "index.json": (index, 0o644)}
    for digest, data in blobs.items():
        files[f"blobs/sha256/{digest.split(':', 1)[1]}"] = (data, 0o644)
    dest.write_bytes(_tar_bytes(files))


# -- containerd -----------------------------------------------------------------------------

def _cni_netns() -> set[str]:
    with contextlib.suppress(FileNotFoundError):
        return {p.name for p in RUN_NETNS.iterdir() if p.name.startswith("cni-")}
    return set()


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base) + "/"
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


@dataclass
class Containerd:
    """A private containerd in ``host_ns`` with the CRI plugin on ``bin_dir``/``conf_dir``."""

    base: Path
    host_ns: str
    bin_dir: Path
    conf_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    cri: CRIClient | None = None

    @property
    def address(self) -> str:
        return str(self.base / "containerd.sock")

    @property
    def log_path(self) -> Path:
        return self.base / "containerd.log"

    def log(self) -> str:
        """containerd's log so far (its tail)."""
        return self.log_path.read_text(errors="replace")[-6000:] if (
            self.log_path.exists()) else ""

    def write_config(self) -> Path:
        config = self.base / "config.toml"
        config.write_text(f"""version = 2
root = "{self.base}/root"
state = "{self.base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.base}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This sandbox cannot lower oom_score_adj (writing -998, the sandbox's, fails): keep the
  # caller's, as containerd does for rootless runs.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.bin_dir}"
    conf_dir = "{self.conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
""")
        return config

    def start(self) -> None:
        """Start containerd, wait for its CRI, import the pause image."""
        config = self.write_config()
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={self.host_ns}", "--", "containerd", "--config",
                 str(config), "--log-level", "info"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_for(lambda: Path(self.address).exists() or self.proc.poll() is not None,
                        timeout=60):
            raise AssertionError(f"containerd did not start:\n{self.log()}")
        if self.proc.poll() is not None:
            raise AssertionError(f"containerd exited:\n{self.log()}")
        image = self.base / "pause.tar"
        pause_image_tar(image)
        self.ctr("images", "import", "--snapshotter", "overlayfs", str(image))
        self.cri = CRIClient(self.address)
        assert wait_for(self._cri_up, timeout=30)

    def _cri_up(self) -> bool:
        assert self.cri is not None
        try:
            self.cri.version()
        except Exception:
            return False
        return True

    def ctr(self, *args: str) -> str:
        proc = subprocess.run(["ctr", "--address", self.address, "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {proc.stderr}{proc.stdout}")
        return proc.stdout

    def close(self, netns_before: set[str]) -> None:
        """Remove every sandbox, stop containerd, remove what it left."""
        if self.cri is not None:
            with contextlib.suppress(Exception):
                for sandbox in self.cri.list_sandboxes():
                    with contextlib.suppress(Exception):
                        self.cri.stop_pod_sandbox(sandbox)
                    with contextlib.suppress(Exception):
                        self.cri.remove_pod_sandbox(sandbox)
            self.cri.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for mount in _mounts_under(self.base):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        for name in _cni_netns() - netns_before:
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def containerd_in(host_ns: str, bin_dir: Path, conf_dir: Path) -> Iterator[Containerd]:
    """A started :class:`Containerd`; everything it made is removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="pytctd"))
    before = _cni_netns()
    daemon = Containerd(base, host_ns, bin_dir, conf_dir)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close(before)
