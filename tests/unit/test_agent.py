"""The node agent without namespaces: socket safety, ordering, endpoints, install, logs.

Calls here go to test plugins registered for the test (they touch no kernel state) or end
in validation, because the agent runs in the machine's own namespace in these tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from pycni.cli import app
from pycni.daemon import (
    Agent,
    AgentConfig,
    AgentError,
    Call,
    JSONFormatter,
    interpreter,
    parse_address,
    shim_script,
    unit_text,
)
from pycni.invoke import KeyedSerial
from pycni.shim import (
    ACK,
    MAGIC,
    MAX_REQUEST,
    FramingError,
    encode_message,
    netns_identity,
    read_message,
)
from pycni.skel import CmdArgs, Plugin
from pycni.testing import unix_exchange_as_nobody

REPO = Path(__file__).resolve().parents[2]


class Gate(Plugin):
    """CHECK blocks until released; records how many calls per container overlap."""

    type_name = "pytgate"
    lock = threading.Lock()
    running: ClassVar[dict[str, int]] = {}
    overlap: ClassVar[dict[str, int]] = {}
    order: ClassVar[list[str]] = []
    release: ClassVar[dict[str, threading.Event]] = {}
    configs: ClassVar[list[bytes]] = []

    def check(self, args: CmdArgs) -> None:
        cid = args.container_id
        with self.lock:
            self.running[cid] = self.running.get(cid, 0) + 1
            self.overlap[cid] = max(self.overlap.get(cid, 0), self.running[cid])
            self.order.append(f"{cid}:{args.ifname}")
        try:
            gate = self.release.get(cid)
            if gate is not None and not gate.wait(30):
                raise RuntimeError(f"{cid} was never released")
        finally:
            with self.lock:
                self.running[cid] -= 1

    def status(self, args: CmdArgs) -> None:
        self.configs.append(args.stdin)
        logging.getLogger("pycni.test").warning("status of %s is fine", args.conf.name)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "agent.sock"


@pytest.fixture
def agent(sock_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    from pycni.invoke import REGISTRY

    monkeypatch.setitem(REGISTRY, "pytgate", f"{__name__}:Gate")
    for attr in ("running", "overlap", "release"):
        getattr(Gate, attr).clear()
    Gate.order.clear()
    Gate.configs.clear()
    a = Agent(AgentConfig(socket_path=str(sock_path), metrics_address=("127.0.0.1", 0),
                          workers=8))
    a.start()
    yield a
    a.shutdown(grace=10)


def shim(tmp_path: Path, plugin_type: str, sock_path: Path) -> Path:
    exe = tmp_path / plugin_type
    exe.write_text(shim_script(plugin_type, interpreter(), socket_path=str(sock_path)))
    exe.chmod(0o755)
    return exe


CONF = json.dumps({"cniVersion": "1.0.0", "name": "pytnet", "type": "pytgate"}).encode()


def call(exe: Path, command: str, cid: str = "", ifname: str = "eth0", conf: bytes = CONF,
         *, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/x",
                "CNI_IFNAME": ifname, "CNI_PATH": "/x"})
    return subprocess.run([str(exe)], input=conf, env=env, capture_output=True,
                          timeout=timeout, check=False)


def test_socket_is_root_only(agent: Agent, sock_path: Path) -> None:
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(sock_path.stat().st_mode)
    assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o700


def test_unsafe_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(AgentError, match="writable by other users"):
        Agent(AgentConfig(socket_path=str(shared / "a.sock"), metrics_address=None)).start()


def test_second_agent_on_the_same_socket_is_refused(agent: Agent, sock_path: Path) -> None:
    with pytest.raises(AgentError, match="another agent"):
        Agent(AgentConfig(socket_path=str(sock_path), metrics_address=None)).start()


def test_stale_socket_is_replaced(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()
    a = Agent(AgentConfig(socket_path=str(sock_path), metrics_address=None))
    a.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(sock_path))
    finally:
        assert a.shutdown(grace=5)
    assert not sock_path.exists()


def test_same_container_is_serialised_others_run_at_once(
        agent: Agent, tmp_path: Path, sock_path: Path) -> None:
    exe = shim(tmp_path, "pytgate", sock_path)
    Gate.release["pyta"] = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        first = [pool.submit(call, exe, "CHECK", "pyta", f"eth{i}") for i in range(3)]
        # pyta's calls wait for the gate; a call of another container still gets through.
        assert call(exe, "CHECK", "pytb").returncode == 0
        Gate.release["pyta"].set()
        assert [f.result().returncode for f in first] == [0, 0, 0]
    assert Gate.overlap == {"pyta": 1, "pytb": 1}


def test_a_failed_thread_start_costs_one_call_not_the_agent(
        agent: Agent, tmp_path: Path, sock_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"can't start new thread" for one call: that shim runs the call itself (pytgate is
    unknown outside the agent, so it fails there), and the next call is served."""
    real_start = threading.Thread.start
    failures = [RuntimeError("can't start new thread")]

    def start(self: threading.Thread) -> None:
        if self.name.startswith("pycni-call") and failures:
            raise failures.pop()
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    exe = shim(tmp_path, "pytgate", sock_path)
    first = call(exe, "CHECK", "pytd", timeout=20)
    assert first.returncode == 1
    assert b"pycni has no plugin of type 'pytgate'" in first.stderr
    assert not failures
    assert call(exe, "CHECK", "pytd", timeout=20).returncode == 0  # served by the agent
    assert Gate.order == ["pytd:eth0"]  # the first call never ran in the agent


def _raw_request(sock_path: Path, data: bytes) -> bytes:
    """Send ``data`` on the agent's socket; everything it answers until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(30)
        c.connect(str(sock_path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            c.sendall(data)
        chunks = []
        # A peer that closed with our request unread resets the connection after its
        # answer (unix sockets report ECONNRESET then, not the end of the stream).
        with contextlib.suppress(ConnectionResetError):
            while chunk := c.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("request_head", [
    # One part announcing 100 MiB: refused from the header, before anything is read.
    (5).to_bytes(4, "big") + (100 << 20).to_bytes(4, "big"),
    # Parts of 1 MiB each, more than MAX_REQUEST in all.
    b"".join([(8).to_bytes(4, "big")] + [(1 << 20).to_bytes(4, "big") + b"x" * (1 << 20)] * 5),
], ids=["one-huge-part", "many-parts"])
def test_oversized_request_is_refused_with_a_clear_error(
        agent: Agent, sock_path: Path, request_head: bytes) -> None:
    reply = _raw_request(sock_path, request_head)
    assert reply[:1] == ACK
    status, out, _err = read_message(io.BytesIO(reply[1:]).read)[1:]
    err = json.loads(out)
    assert (status, err["code"]) == (b"1", 6)
    assert err["msg"].startswith("the pycni agent refused the request: request larger than "
                                 f"the limit of {MAX_REQUEST} bytes")


def test_trickling_clients_do_not_hold_the_workers(
        agent: Agent, tmp_path: Path, sock_path: Path) -> None:
    """More half-sent requests than workers: a call still gets through at once."""
    exe = shim(tmp_path, "pytgate", sock_path)
    with ExitStack() as stack:
        for _ in range(agent.config.workers + 2):
            c = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            c.connect(str(sock_path))
            c.sendall(encode_message([MAGIC, b"pytgate"])[:10])  # and then nothing
        assert call(exe, "CHECK", "pyte", timeout=20).returncode == 0


def test_a_request_read_in_many_pieces_arrives_whole(
        agent: Agent, tmp_path: Path, sock_path: Path) -> None:
    """A config far larger than one read of the intake reaches the plugin byte for byte."""
    exe = shim(tmp_path, "pytgate", sock_path)
    conf = json.dumps({"cniVersion": "1.1.0", "name": "pytnet", "type": "pytgate",
                       "pad": [f"{i:07d}" for i in range(60_000)]}).encode()
    assert len(conf) > 500_000
    for _ in range(2):
        out = call(exe, "STATUS", conf=conf)
        assert out.returncode == 0, out
    assert Gate.configs == [conf, conf]


def test_non_root_peer_is_refused(sock_path: Path) -> None:
    """Even through a socket file others may open, only root is served (SO_PEERCRED)."""
    run_dir = Path(tempfile.mkdtemp(prefix="pyt", dir="/tmp"))
    try:
        run_dir.chmod(0o755)  # nobody must reach the socket for the kernel check to matter
        path = run_dir / "agent.sock"
        a = Agent(AgentConfig(socket_path=str(path), metrics_address=None, workers=2))
        a.start()
        try:
            path.chmod(0o666)
            request = encode_message([MAGIC, b"loopback", netns_identity(), b"",
                                      b"CNI_COMMAND", b"VERSION"])
            as_root = _raw_request(path, request)
            assert as_root[:1] == ACK
            as_nobody = unix_exchange_as_nobody(str(path), request)
            assert as_nobody == b""  # closed unacknowledged: a shim runs the call itself
        finally:
            a.shutdown(grace=5)
    finally:
        shutil.rmtree(run_dir)




def test_idle_metrics_connections_take_no_threads(agent: Agent) -> None:
    host, port = agent.http_address.rsplit(":", 1) if agent.http_address else ("", "")
    before = threading.active_count()
    with ExitStack() as stack:
        for _ in range(300):
            c = stack.enter_context(socket.create_connection((host, int(port)), timeout=10))
            del c
        # A slow client: half a request head, then nothing.
        slow = stack.enter_context(socket.create_connection((host, int(port)), timeout=10))
        slow.sendall(b"GET /metr")
        with urllib.request.urlopen(f"http://{agent.http_address}/metrics",
                                    timeout=10) as resp:
            assert resp.status == 200
            assert b"pycni_agent_in_flight" in resp.read()
        assert threading.active_count() - before < 10


def test_warnings_reach_the_callers_stderr(agent: Agent, tmp_path: Path,
                                           sock_path: Path) -> None:
    exe = shim(tmp_path, "pytgate", sock_path)
    served = call(exe, "STATUS", conf=CONF.replace(b"1.0.0", b"1.1.0"))
    assert (served.returncode, served.stderr) == (0, b"status of pytnet is fine\n")


def test_endpoints(agent: Agent, tmp_path: Path, sock_path: Path) -> None:
    exe = shim(tmp_path, "pytgate", sock_path)
    assert call(exe, "CHECK", "pytc").returncode == 0
    assert call(exe, "CHECK", "pytc", "bad/name").returncode == 1
    base = f"http://{agent.http_address}"
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=10) as resp:  # noqa: S310 - our URL
            assert resp.status == 200
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    assert 'pycni_agent_requests_total{command="CHECK",plugin="pytgate"} 2.0' in text
    assert 'pycni_agent_errors_total{code="4",command="CHECK",plugin="pytgate"} 1.0' in text
    assert "pycni_agent_in_flight 0.0" in text
    assert "pycni_agent_request_duration_seconds_count" in text


def test_pool_usage_of_host_local_networks(agent: Agent, tmp_path: Path) -> None:
    data = tmp_path / "ipam"
    (data / "pytnet").mkdir(parents=True)
    for name in ("10.9.0.2", "10.9.0.3", "lock", "last_reserved_ip.0", "10.8.0.1"):
        (data / "pytnet" / name).write_text("x")
    conf = {"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.9.0.0/29", "dataDir": str(data)}}
    agent.metrics.pools.observe(json.dumps(conf).encode(), "bridge")
    lines = [line for line in agent.metrics.exposition().decode().splitlines()
             if line.startswith("pycni_agent_ipam_pool")]
    assert lines == [
        'pycni_agent_ipam_pool_size{network="pytnet",range="10.9.0.1-10.9.0.6"} 5.0',
        'pycni_agent_ipam_pool_allocated{network="pytnet",range="10.9.0.1-10.9.0.6"} 2.0',
    ]


def test_shutdown_removes_the_socket_and_stops_being_ready(sock_path: Path) -> None:
    a = Agent(AgentConfig(socket_path=str(sock_path), metrics_address=None))
    a.start()
    assert a.ready()
    assert a.shutdown(grace=5)
    assert not a.ready()
    assert not sock_path.exists()


def test_keyed_serial_keeps_arrival_order() -> None:
    serial = KeyedSerial()
    seen: list[int] = []
    inner_done = threading.Event()

    def job(n: int) -> None:
        seen.append(n)
        if n == 0:
            # Queued while job 0 runs: they run after it, on this thread, in order.
            for k in (1, 2, 3):
                serial.run("k", lambda k=k: seen.append(k))
            inner_done.set()

    serial.run("k", lambda: job(0))
    assert inner_done.is_set()
    assert seen == [0, 1, 2, 3]


class _FailingCluster:
    """A cluster runner whose start fails (its datastore is unreachable, say)."""

    controller = None

    def start(self) -> None:
        raise RuntimeError("no datastore")


def test_a_failed_start_leaves_veth_deletes_as_they_were(
        sock_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni import host

    early: list[int] = []  # the process-wide limit host holds, if set
    monkeypatch.setattr(host, "start_early_deletes", early.append)
    monkeypatch.setattr(host, "stop_early_deletes", lambda _timeout: early.clear() or True)
    a = Agent(AgentConfig(socket_path=str(sock_path), metrics_address=None),
              cluster=_FailingCluster())  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match="no datastore"):
            a.start()
        assert early == []
    finally:
        a.shutdown(grace=0)


def test_keyed_serial_survives_a_failing_job() -> None:
    serial = KeyedSerial()
    seen: list[str] = []

    def boom() -> None:
        serial.run("k", lambda: seen.append("after"))
        raise RuntimeError("boom")

    serial.run("k", boom)
    assert seen == ["after"]


def test_keyed_serial_releases_the_key_after_a_base_exception() -> None:
    serial = KeyedSerial()
    seen: list[str] = []

    def stop() -> None:
        serial.run("k", lambda: seen.append("queued"))
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        serial.run("k", stop)
    serial.run("k", lambda: seen.append("later"))  # runs now: the key is free again
    assert seen == ["queued", "later"]


def test_call_decoding() -> None:
    call_ = Call.decode([MAGIC, b"bridge", b"1:2", b"{}", b"CNI_COMMAND", b"ADD",
                         b"HOME", b"/root", b"CNI_ARGS", b"\xff"])
    assert call_.env == {"CNI_COMMAND": "ADD", "CNI_ARGS": os.fsdecode(b"\xff")}
    assert call_.command == "ADD"
    for bad in ([b"x", b"bridge", b"", b""], [MAGIC, b"bridge", b""],
                [MAGIC, b"bridge", b"", b"", b"CNI_COMMAND"]):
        with pytest.raises(FramingError):
            Call.decode(bad)


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:9655", ("127.0.0.1", 9655)), ("[::1]:80", ("::1", 80)), (":0", ("127.0.0.1", 0)),
])
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["9655", "host:", "host:99999", "a:b"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(text)


def test_json_log_lines() -> None:
    record = logging.LogRecord("pycni.agent", logging.WARNING, __file__, 1, "call %s", ("x",),
                               None)
    record.fields = {"plugin": "bridge", "status": 1}
    line = json.loads(JSONFormatter().format(record))
    assert line["msg"] == "call x"
    assert (line["level"], line["plugin"], line["status"]) == ("warning", "bridge", 1)
    assert line["ts"].endswith("Z")


def test_deploy_unit_is_the_default_unit() -> None:
    assert (REPO / "deploy" / "pycni-agent.service").read_text() == unit_text()


def test_install_agent_writes_unit_and_shims(tmp_path: Path) -> None:
    bin_dir, unit_dir = tmp_path / "bin", tmp_path / "units"
    out = CliRunner().invoke(app, ["install", "--agent", "--bin-dir", str(bin_dir),
                                   "--unit-dir", str(unit_dir), "--socket", "/run/x/a.sock"])
    assert out.exit_code == 0, out.stderr
    unit = (unit_dir / "pycni-agent.service").read_text()
    assert "--socket /run/x/a.sock" in unit
    assert "ExecStart=/" in unit
    assert "'/run/x/a.sock'" in (bin_dir / "bridge").read_text()
    assert oct(stat.S_IMODE((unit_dir / "pycni-agent.service").stat().st_mode)) == "0o644"


def test_agent_command_rejects_a_bad_metrics_address(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["agent", "--socket", str(tmp_path / "s"),
                                   "--metrics-address", "nowhere"])
    assert out.exit_code == 1
    assert "HOST:PORT" in out.stderr


@pytest.mark.parametrize("setting", ["off", "file"])
def test_pycni_trace_off_turns_the_agents_ring_off(tmp_path: Path, sock_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   setting: str) -> None:
    from pycni.invoke import REGISTRY

    monkeypatch.setitem(REGISTRY, "pytgate", f"{__name__}:Gate")
    monkeypatch.setenv("PYCNI_TRACE", "off" if setting == "off" else str(tmp_path / "t.jsonl"))
    a = Agent(AgentConfig(socket_path=str(sock_path), metrics_address=("127.0.0.1", 0)))
    a.start()
    try:
        assert call(shim(tmp_path, "pytgate", sock_path), "CHECK", "pytc").returncode == 0
        with urllib.request.urlopen(f"http://{a.http_address}/trace",
                                    timeout=10) as resp:
            records = json.loads(resp.read())["records"]
    finally:
        a.shutdown(grace=10)
    assert [r["plugin"] for r in records] == ([] if setting == "off" else ["pytgate"])
    assert not (tmp_path / "t.jsonl").exists()  # the agent's calls go to its ring only
