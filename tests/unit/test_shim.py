"""The plugin shim: framing, standalone fallback, dropped calls, environment pass-through.

The shims run as the executables ``pycni install`` writes, against fake agents (a thread
on a unix socket in tmp_path) and a real in-process agent; the plugin calls used here fail
validation or only answer VERSION, so nothing touches the kernel.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.daemon import Agent, AgentConfig, interpreter, shim_script
from pycni.shim import (
    ACK,
    MAGIC,
    MAX_PARTS,
    MAX_REQUEST,
    FramingError,
    cni_environ,
    encode_message,
    read_message,
)
from pycni.spec import SUPPORTED_VERSIONS


def _reader(data: bytes, chunk: int = 3) -> Callable[[int], bytes]:
    """recv() over ``data`` that returns at most ``chunk`` bytes at a time."""
    pos = 0

    def recv(n: int) -> bytes:
        nonlocal pos
        out = data[pos:pos + min(n, chunk)]
        pos += len(out)
        return out

    return recv


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_framing_round_trips(parts: list[bytes]) -> None:
    assert read_message(_reader(encode_message(parts))) == parts


@pytest.mark.parametrize("cut", [1, 4, 7, 9, 12])
def test_truncated_message_is_a_framing_error(cut: int) -> None:
    data = encode_message([b"abc", b"defgh"])
    with pytest.raises(FramingError, match="closed mid-message"):
        read_message(_reader(data[:cut]))


def test_limits_are_enforced() -> None:
    with pytest.raises(FramingError, match="parts"):
        read_message(_reader((MAX_PARTS + 1).to_bytes(4, "big")))
    with pytest.raises(FramingError, match="bytes"):
        read_message(_reader((1).to_bytes(4, "big") + (1 << 30).to_bytes(4, "big")))


def test_only_cni_variables_are_forwarded_unchanged() -> None:
    env = {b"CNI_COMMAND": b"ADD", b"PATH": b"/bin", b"CNI_ARGS": b"a=\xff;b=\n",
           b"cni_lower": b"x", b"CNI_": b""}
    assert cni_environ(env) == [b"CNI_COMMAND", b"ADD", b"CNI_ARGS", b"a=\xff;b=\n",
                                b"CNI_", b""]


# -- the installed executable ----------------------------------------------------------------

def install(tmp_path: Path, plugin_type: str, socket_path: Path,
            deadlines: tuple[float, float, float] | None = None) -> Path:
    exe = tmp_path / "bin" / plugin_type
    exe.parent.mkdir(exist_ok=True)
    exe.write_text(shim_script(plugin_type, interpreter(), socket_path=str(socket_path),
                               deadlines=deadlines))
    exe.chmod(0o755)
    return exe


def run(exe: Path, env: dict[bytes, bytes], stdin: bytes = b""
        ) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environb.items() if not k.startswith(b"CNI_")}
    full.update(env)
    return subprocess.run([str(exe)], input=stdin, env=full, capture_output=True, timeout=60,
                          check=False)


def in_process(plugin_type: str, env: dict[bytes, bytes], stdin: bytes) -> tuple[int, bytes]:
    """What the plugin itself answers (no shim, no agent)."""
    from pycni.invoke import run_in_process

    return run_in_process(plugin_type, {os.fsdecode(k): os.fsdecode(v) for k, v in env.items()},
                          stdin)


class FakeAgent:
    """Accepts connections on a unix socket and does ``behaviour(conn)`` with each."""

    def __init__(self, path: Path, behaviour: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.requests: list[list[bytes]] = []
        self.hold = threading.Event()  # set when the test ends: behaviours that stall end
        self.behaviour = behaviour
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.behaviour(conn)

    def read(self, conn: socket.socket) -> list[bytes]:
        parts = read_message(conn.recv)
        self.requests.append(parts)
        return parts

    def close(self) -> None:
        self.hold.set()
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join()


def replying(parts: list[bytes], cut: int | None = None
             ) -> Callable[[FakeAgent, socket.socket], None]:
    """An agent that accepts, reads the request and sends ``parts`` (the first ``cut`` bytes)."""

    def behaviour(agent: FakeAgent, conn: socket.socket) -> None:
        conn.sendall(ACK)
        agent.read(conn)
        conn.sendall(encode_message(parts)[:cut])

    return behaviour


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.sock"


@pytest.fixture
def fake(sock_path: Path) -> Iterator[Callable[[Callable[[FakeAgent, socket.socket], None]],
                                               FakeAgent]]:
    agents: list[FakeAgent] = []

    def make(behaviour: Callable[[FakeAgent, socket.socket], None]) -> FakeAgent:
        agent = FakeAgent(sock_path, lambda conn: behaviour(agent, conn))
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.close()


VERSION_ENV = {b"CNI_COMMAND": b"VERSION"}
LOOPBACK = json.dumps({"cniVersion": "0.4.0", "name": "n", "type": "loopback"}).encode()
ADD_ENV = {b"CNI_COMMAND": b"ADD", b"CNI_CONTAINERID": b"c1", b"CNI_NETNS": b"/nonexistent",
           b"CNI_IFNAME": b"lo", b"CNI_PATH": b"/nonexistent"}


def test_no_agent_runs_the_plugin_itself(tmp_path: Path, sock_path: Path) -> None:
    exe = install(tmp_path, "loopback", sock_path)
    proc = run(exe, VERSION_ENV)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["supportedVersions"] == list(SUPPORTED_VERSIONS)
    proc = run(exe, ADD_ENV, LOOPBACK)
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, LOOPBACK)


def test_stale_socket_file_means_standalone(tmp_path: Path, sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: connection refused
    proc = run(install(tmp_path, "loopback", sock_path), ADD_ENV, LOOPBACK)
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, LOOPBACK)


def test_agent_reply_is_written_back(tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    agent = fake(replying([b"ok", b"3", b"out\n", b"err\n"]))
    proc = run(install(tmp_path, "bridge", tmp_path / "agent.sock"), ADD_ENV, b"{stdin}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b"out\n", b"err\n")
    [request] = agent.requests
    assert request[:4] == [MAGIC, b"bridge", _netns_id(), b"{stdin}"]
    sent = dict(zip(request[4::2], request[5::2], strict=True))
    assert sent == ADD_ENV


def _netns_id() -> bytes:
    st_ = Path("/proc/thread-self/ns/net").stat()
    return f"{st_.st_dev}:{st_.st_ino}".encode()


def test_version_does_not_read_stdin(tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    agent = fake(replying([b"ok", b"0", b"{}", b""]))
    exe = install(tmp_path, "loopback", tmp_path / "agent.sock")
    # stdin stays open: a shim that read it would hang until the timeout.
    with subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          env={**os.environ, "CNI_COMMAND": "VERSION"}) as proc:
        assert proc.stdout is not None
        assert proc.stdout.read() == b"{}"
        assert proc.wait(timeout=60) == 0
        assert proc.stdin is not None
        proc.stdin.close()
    assert agent.requests[0][3] == b""


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "9.9.9", None])
def test_agent_dropping_the_call_is_try_again_later(
        tmp_path: Path, fake: Callable[..., FakeAgent], version: str | None) -> None:
    fake(replying([b"ok", b"0", b"partial"], cut=10))
    conf = {"name": "n", "type": "loopback"} | ({"cniVersion": version} if version else {})
    proc = run(install(tmp_path, "loopback", tmp_path / "agent.sock"), ADD_ENV,
               json.dumps(conf).encode())
    assert proc.returncode == 1
    err = json.loads(proc.stdout)
    assert err["code"] == 11
    assert "try again later" in err["msg"]
    expected = version if version in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    assert err["cniVersion"] == expected


def test_closed_before_ack_runs_standalone(tmp_path: Path,
                                          fake: Callable[..., FakeAgent]) -> None:
    fake(lambda _agent, _conn: None)  # accepts and closes: an agent going down
    proc = run(install(tmp_path, "loopback", tmp_path / "agent.sock"), ADD_ENV, LOOPBACK)
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, LOOPBACK)


def test_standalone_answer_runs_the_plugin_with_the_same_stdin(
        tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    fake(replying([b"standalone", b"caller is in another netns"]))
    proc = run(install(tmp_path, "loopback", tmp_path / "agent.sock"), ADD_ENV, LOOPBACK)
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, LOOPBACK)


def test_garbled_reply_is_try_again_later(tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    fake(replying([b"what"]))
    proc = run(install(tmp_path, "loopback", tmp_path / "agent.sock"), ADD_ENV, LOOPBACK)
    assert json.loads(proc.stdout)["code"] == 11


#: connect, acknowledgement, whole call (seconds): short, so a test does not wait long.
SHORT = (1.0, 1.0, 2.0)


def test_agent_that_never_acknowledges_means_standalone(
        tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    """An agent whose accept loop is stuck: the shim stops waiting and runs the call."""
    fake(lambda agent, _conn: agent.hold.wait(60))
    exe = install(tmp_path, "loopback", tmp_path / "agent.sock", SHORT)
    proc = run(exe, ADD_ENV, LOOPBACK)
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, LOOPBACK)


def test_agent_that_never_answers_is_try_again_later(
        tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    def stall(agent: FakeAgent, conn: socket.socket) -> None:
        conn.sendall(ACK)
        agent.read(conn)
        agent.hold.wait(60)

    fake(stall)
    proc = run(install(tmp_path, "loopback", tmp_path / "agent.sock", SHORT), ADD_ENV, LOOPBACK)
    err = json.loads(proc.stdout)
    assert (proc.returncode, err["code"]) == (1, 11)
    assert "no reply from the agent within 2 s" in err["details"]


def test_full_backlog_means_standalone(tmp_path: Path, sock_path: Path) -> None:
    """Nobody accepts and the backlog is full: without a deadline connect() would block."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(0)
        queued = []
        try:
            while True:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                queued.append(c)
                c.setblocking(False)
                c.connect(str(sock_path))
        except BlockingIOError:
            pass
        try:
            exe = install(tmp_path, "loopback", sock_path, SHORT)
            proc = run(exe, ADD_ENV, LOOPBACK)
        finally:
            for c in queued:
                c.close()
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, LOOPBACK)


def test_request_over_the_agents_limit_runs_standalone(
        tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    received: list[bytes] = []
    fake(lambda _agent, conn: received.append(conn.recv(1 << 20)))
    huge = json.dumps({**json.loads(LOOPBACK), "pad": "x" * MAX_REQUEST}).encode()
    proc = run(install(tmp_path, "loopback", tmp_path / "agent.sock"), ADD_ENV, huge)
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, huge)
    assert received == [b""]  # connected, sent nothing


def test_shim_imports_no_python_stdlib(tmp_path: Path, fake: Callable[..., FakeAgent]) -> None:
    """Forwarding loads C modules and pycni.shim only (the import cost is the point)."""

    fake(replying([b"ok", b"0", b"", b""]))
    exe = install(tmp_path, "loopback", tmp_path / "agent.sock")
    # Run the executable's text, then list the modules it loaded (it exits via SystemExit).
    code = (f"import sys\ntry:\n    exec(open({str(exe)!r}).read())\n"
            f"except SystemExit:\n    print(sorted(sys.modules))\n")
    bare = "import sys; print(sorted(sys.modules))"
    env = {"CNI_COMMAND": "VERSION"}
    loaded = subprocess.run([interpreter(), "-IS", "-c", code], env=env, capture_output=True,
                            text=True, check=True).stdout
    before = subprocess.run([interpreter(), "-IS", "-c", bare], env=env, capture_output=True,
                            text=True, check=True).stdout
    extra = set(json.loads(loaded.replace("'", '"'))) - set(json.loads(before.replace("'", '"')))
    assert "pycni.shim" in extra
    assert extra <= {"pycni", "pycni.shim", "_socket"}, extra


# -- hostile environments through a real agent -----------------------------------------------

HOSTILE = [
    {b"CNI_COMMAND": b"ADD"},
    {b"CNI_COMMAND": b"FROB", b"CNI_CONTAINERID": b"c1"},
    {**ADD_ENV, b"CNI_CONTAINERID": b"../../etc/passwd"},
    {**ADD_ENV, b"CNI_CONTAINERID": b"c\n1"},
    {**ADD_ENV, b"CNI_IFNAME": b"a-very-long-interface-name"},
    {**ADD_ENV, b"CNI_IFNAME": b"eth/0"},
    {**ADD_ENV, b"CNI_IFNAME": b"\xff\xfe"},
    {**ADD_ENV, b"CNI_ARGS": b"IgnoreUnknown=maybe;=x;\xff=1"},
    {**ADD_ENV, b"CNI_NETNS": b""},
]


@pytest.fixture
def real_agent(sock_path: Path) -> Iterator[Agent]:
    agent = Agent(AgentConfig(socket_path=str(sock_path), metrics_address=None, workers=4))
    agent.start()
    yield agent
    agent.shutdown(grace=5)


@pytest.mark.parametrize("env", HOSTILE, ids=lambda e: repr(e)[:60])
def test_hostile_env_reaches_the_plugins_validation(
        tmp_path: Path, sock_path: Path, real_agent: Agent, env: dict[bytes, bytes]) -> None:
    exe = install(tmp_path, "loopback", sock_path)
    via_agent = run(exe, env, LOOPBACK)
    served = real_agent.metrics.requests.collect()[0].samples
    assert sum(s.value for s in served if s.name.endswith("_total")) == 1
    assert (via_agent.returncode, via_agent.stdout) == in_process("loopback", env, LOOPBACK)
    assert via_agent.returncode == 1


def test_agent_and_standalone_answer_alike(tmp_path: Path, sock_path: Path) -> None:
    exe = install(tmp_path, "bridge", sock_path)
    # Calls that end in validation: this agent runs in the machine's own namespace.
    cases = [(VERSION_ENV, b""), (ADD_ENV, b"not json"), (ADD_ENV, b'{"cniVersion": "0.4.0"}'),
             (ADD_ENV, b'{"cniVersion": "9.9.9", "name": "n", "type": "bridge"}')]
    alone = [run(exe, env, data) for env, data in cases]
    agent = Agent(AgentConfig(socket_path=str(sock_path), metrics_address=None, workers=2))
    agent.start()
    try:
        served = [run(exe, env, data) for env, data in cases]
    finally:
        agent.shutdown(grace=5)
    assert [(p.returncode, p.stdout, p.stderr) for p in served] == \
        [(p.returncode, p.stdout, p.stderr) for p in alone]
    samples = agent.metrics.requests.collect()[0].samples
    assert sum(s.value for s in samples if s.name.endswith("_total")) == len(cases)


def test_a_standalone_call_skips_the_teardown_but_runs_exit_handlers(
        tmp_path: Path, sock_path: Path) -> None:
    # Tearing the interpreter down costs a standalone call a tenth of its instructions and
    # the cyclic collector a twentieth: the shim ends the process once the call is over,
    # after what a normal exit does that can be seen (exit handlers, flushed streams).
    exe = install(tmp_path, "loopback", sock_path)
    text = exe.read_text()
    hooks = ("import atexit, gc, posix\n"
             "atexit.register(lambda: posix.write(2, b'exit handler, gc %d\\n' % gc.isenabled()))\n"
             "class Teardown:\n"
             "    def __del__(self) -> None:\n"
             "        posix.write(2, b'teardown\\n')\n"
             "kept = Teardown()\n")
    entry = "from pycni.shim import main"
    exe.write_text(text.replace(entry, hooks + entry))
    proc = run(exe, ADD_ENV, LOOPBACK)
    assert (proc.returncode, proc.stdout) == in_process("loopback", ADD_ENV, LOOPBACK)
    assert proc.stderr == b"exit handler, gc 0\n"
