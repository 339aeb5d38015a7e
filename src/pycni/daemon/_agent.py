"""The node agent: runs pycni plugins in-process for the shims, on a unix socket.

A runtime starts one plugin process per plugin of a chain per pod; a Python plugin pays its
interpreter and imports each time. The agent pays them once: the executables ``pycni
install`` writes (:mod:`pycni.shim`) forward each call here, where it runs through
:func:`pycni.skel.run_plugin_bytes` with the caller's CNI_* environment and stdin, exactly
what the plugin executable would do.

Concurrency: each accepted connection is read on a worker thread; calls for the same
container ID run one after the other in arrival order, others run at once on the pool.
Nothing else is serialised here: host-local takes its store's flock, netfilter changes are
one batch per call, and a call's namespace switches happen on its own threads.

Stopping (SIGTERM): the socket is removed first, so new calls find no agent and the shims
run them themselves; calls already accepted finish within the grace period. A call cut off
after that makes its shim print "try again later" (code 11).

Socket: ``/run/pycni/agent.sock`` by default, mode 0600 in a 0700 directory: any client can
make the agent act as root on the node's network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..shim import (
    ACK,
    DEFAULT_SOCKET,
    MAGIC,
    FramingError,
    encode_message,
    netns_identity,
    read_message,
)
from ._log import CallLog
from ._metrics import Metrics, StatusServer

log = logging.getLogger("pycni.agent")

#: Commands that act on one container: these are ordered per CNI_CONTAINERID.
PER_CONTAINER = frozenset({"ADD", "DEL", "CHECK"})


class AgentError(Exception):
    """The agent cannot start (socket in use, unsafe directory, port taken)."""


@dataclass(frozen=True)
class AgentConfig:
    """How the agent listens and how much it runs at once."""

    socket_path: str = DEFAULT_SOCKET
    #: (host, port) of /healthz, /readyz, /metrics; None: no HTTP endpoint. Port 0: any.
    metrics_address: tuple[str, int] | None = ("127.0.0.1", 9655)
    workers: int = 32
    #: Seconds a stopping agent waits for accepted calls.
    grace: float = 30.0
    #: Seconds a shim has to send its request after connecting.
    read_timeout: float = 30.0


@dataclass(frozen=True)
class Call:
    """One decoded request."""

    plugin_type: str
    netns: bytes
    stdin: bytes
    env: dict[str, str]

    @property
    def command(self) -> str:
        """CNI_COMMAND as sent."""
        return self.env.get("CNI_COMMAND", "")

    @classmethod
    def decode(cls, parts: list[bytes]) -> Call:
        """FramingError unless the parts are a request of this protocol version."""
        if len(parts) < 4 or parts[0] != MAGIC or len(parts) % 2:
            raise FramingError("not a pycni agent request")
        env = {}
        for i in range(4, len(parts), 2):
            key = os.fsdecode(parts[i])
            if key.startswith("CNI_"):
                env[key] = os.fsdecode(parts[i + 1])
        return cls(parts[1].decode(errors="replace"), parts[2], parts[3], env)


class KeyedSerial:
    """Runs jobs with the same key one at a time, in submission order; None keys at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Callable[[], None]]] = {}

    def run(self, key: str | None, job: Callable[[], None]) -> None:
        """Run ``job`` now on this thread, or queue it behind the running job of ``key``.

        The thread that runs a key's first job also runs the jobs queued behind it.
        """
        if key is None:
            job()
            return
        with self._lock:
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._queues[key] = deque()
        while True:
            try:
                job()
            except Exception:  # a job must not take the jobs queued behind it down
                log.exception("call job failed")
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    return
                job = queue.popleft()


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about ``state`` if it started us; otherwise nothing."""
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]  # abstract socket namespace
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), target)


class Agent:
    """The CNI request server. ``start()``, then ``shutdown()`` (or :func:`run_agent`)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self._serial = KeyedSerial()
        self._calls = CallLog()
        self._listener: socket.socket | None = None
        self._socket_ino = 0
        self._netns = b""
        self._pool: ThreadPoolExecutor | None = None
        self._accepter: threading.Thread | None = None
        self._http: StatusServer | None = None
        self._stopping = threading.Event()
        self._open = 0  # accepted connections not finished
        self._idle = threading.Condition()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Warm the plugins, listen, and serve in background threads.

        Plugins act in the network namespace of the thread that calls this.
        """
        from ..plugins import REGISTRY, load_plugin

        for plugin_type in REGISTRY:
            try:
                load_plugin(plugin_type)
            except Exception as exc:  # a broken plugin must not stop the others
                log.warning("cannot load plugin %s: %s", plugin_type, exc)
        self._netns = netns_identity()
        self._listener = self._listen(self.config.socket_path)
        logging.getLogger().addHandler(self._calls)
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="pycni-call")
        if self.config.metrics_address is not None:
            try:
                self._http = StatusServer(self.config.metrics_address, self.metrics,
                                          self.healthy, self.ready)
            except OSError as exc:
                self._close_listener()
                raise AgentError(f"cannot serve metrics on {self.config.metrics_address}: "
                                 f"{exc.strerror}") from exc
            self._http.start()
        self._accepter = threading.Thread(target=self._accept_loop, name="pycni-accept",
                                          daemon=True)
        self._accepter.start()
        log.info("listening", extra={"fields": {
            "socket": self.config.socket_path, "workers": self.config.workers,
            "metrics": self.http_address}})
        sd_notify("READY=1")

    @property
    def http_address(self) -> str | None:
        """``host:port`` of the HTTP endpoint, if any."""
        if self._http is None:
            return None
        host, port = self._http.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def healthy(self) -> bool:
        """The accept loop is alive (or the agent is draining after a stop)."""
        return self._stopping.is_set() or (self._accepter is not None
                                           and self._accepter.is_alive())

    def ready(self) -> bool:
        """Calls are being accepted."""
        return not self._stopping.is_set() and self.healthy()

    def shutdown(self, grace: float | None = None) -> bool:
        """Stop accepting, wait up to ``grace`` seconds for accepted calls; True if all ended."""
        if grace is None:
            grace = self.config.grace
        sd_notify("STOPPING=1")
        self._stopping.set()
        self._close_listener()
        if self._accepter is not None:
            self._accepter.join()
        deadline = time.monotonic() + grace
        with self._idle:
            while self._open and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            drained = not self._open
        if self._pool is not None:
            self._pool.shutdown(wait=drained)
        if self._http is not None:
            self._http.stop()
        logging.getLogger().removeHandler(self._calls)
        log.info("stopped", extra={"fields": {"drained": drained, "cut_off": self._open}})
        return drained

    # -- socket ------------------------------------------------------------------------

    @staticmethod
    def _check_dir(directory: Path) -> None:
        try:
            directory.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        except OSError as exc:
            raise AgentError(f"cannot create {directory}: {exc.strerror}") from exc
        st = directory.stat()
        if st.st_mode & 0o022 or st.st_uid != os.geteuid():
            raise AgentError(
                f"socket directory {directory} is writable by other users or not ours "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}): anyone able "
                "to replace the socket could answer the plugins; use a 0700 directory")

    def _listen(self, path: str) -> socket.socket:
        target = Path(path)
        self._check_dir(target.parent)
        if _answers(path):
            raise AgentError(f"another agent is listening on {path}")
        # Bind to a private name, restrict it, then rename over the path: there is never a
        # moment where the socket is reachable with looser permissions, and a stale socket
        # file from a crashed agent is replaced in one step.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(tmp))
            tmp.chmod(0o600)
            sock.listen(1024)
            tmp.replace(target)
        except OSError as exc:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise AgentError(f"cannot listen on {path}: {exc.strerror}") from exc
        self._socket_ino = target.stat().st_ino
        return sock

    def _close_listener(self) -> None:
        sock, self._listener = self._listener, None
        if sock is None:
            return
        # Unlink first: a shim connecting from now on finds no agent and runs standalone.
        # Only our own socket file: a new agent may already have taken the path over.
        with contextlib.suppress(OSError):
            if Path(self.config.socket_path).stat().st_ino == self._socket_ino:
                Path(self.config.socket_path).unlink()
        # shutdown() wakes the thread blocked in accept(); connections still in the
        # backlog are reset, and their shims (no ACK yet) run the call themselves.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    # -- serving -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener, pool = self._listener, self._pool
        if listener is None or pool is None:
            return
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.warning("accept failed: %s", exc)
                time.sleep(0.05)  # EMFILE and friends: back off instead of spinning
                continue
            try:
                conn.sendall(ACK)
            except OSError:
                conn.close()  # the shim gave up already; it never saw an ACK
                continue
            with self._idle:
                self._open += 1
            pool.submit(self._serve_connection, conn)

    def _finished(self, conn: socket.socket) -> None:
        conn.close()
        with self._idle:
            self._open -= 1
            self._idle.notify_all()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.config.read_timeout)
            call = Call.decode(read_message(conn.recv))
            conn.settimeout(None)
        except (OSError, FramingError) as exc:
            log.warning("bad request: %s", exc)
            self._finished(conn)
            return
        from ..plugins import load_plugin

        cls = load_plugin(call.plugin_type)
        if call.netns != self._netns or cls is None:
            # Another network namespace than ours (the plugin would act on the wrong
            # host), or a type we lack (the executable reports that itself).
            reason = "unknown plugin type" if cls is None else "caller is in another netns"
            self._reply(conn, [b"standalone", reason.encode()])
            self._finished(conn)
            return
        key = call.env.get("CNI_CONTAINERID") if call.command in PER_CONTAINER else None

        def job() -> None:
            try:
                self._run(conn, call, cls)
            finally:
                self._finished(conn)

        self._serial.run(key, job)

    def _run(self, conn: socket.socket, call: Call, cls: type) -> None:
        from ..skel import run_plugin_bytes

        self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            with self._calls.capture() as lines:
                status, out = run_plugin_bytes(cls(), call.env, call.stdin)
        finally:
            self.metrics.in_flight.dec()
        seconds = time.perf_counter() - start
        self.metrics.record(call.plugin_type, call.command, seconds, status, out)
        if call.command in PER_CONTAINER or call.command == "GC":
            self.metrics.pools.observe(call.stdin, call.plugin_type)
        err = "".join(f"{line}\n" for line in lines).encode()
        sent = self._reply(conn, [b"ok", str(status).encode(), out, err])
        log.log(logging.INFO if status == 0 else logging.WARNING, "call", extra={"fields": {
            "plugin": call.plugin_type, "command": call.command,
            "container": call.env.get("CNI_CONTAINERID", ""),
            "ifname": call.env.get("CNI_IFNAME", ""), "status": status,
            "ms": round(seconds * 1000, 2), "replied": sent,
            **({"error": out.decode(errors="replace")} if status else {})}})

    @staticmethod
    def _reply(conn: socket.socket, parts: list[bytes]) -> bool:
        try:
            conn.sendall(encode_message(parts))
        except OSError as exc:
            log.warning("caller went away before the reply: %s", exc)
            return False
        return True


def _answers(path: str) -> bool:
    """True if something accepts connections on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def run_agent(config: AgentConfig) -> int:
    """Serve until SIGTERM or SIGINT, then stop gracefully; the process exit status.

    If calls are still running when the grace period ends, the process exits at once
    (their shims report "try again later").
    """
    agent = Agent(config)
    agent.start()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if agent.shutdown():
        return 0
    logging.shutdown()
    os._exit(1)  # worker threads still run plugin calls: do not wait for them


__all__ = ["PER_CONTAINER", "Agent", "AgentConfig", "AgentError", "Call", "KeyedSerial",
           "run_agent", "sd_notify"]
