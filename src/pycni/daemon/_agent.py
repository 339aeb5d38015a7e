"""The node agent: runs pycni plugins in-process for the shims, on a unix socket.

A runtime starts one plugin process per plugin of a chain per pod; a Python plugin pays its
interpreter and imports each time. The agent pays them once: the executables ``pycni
install`` writes (:mod:`pycni.shim`) forward each call here, where it runs through
:func:`pycni.invoke.run_in_process` with the caller's CNI_* environment and stdin, exactly
what the plugin executable would do.

Concurrency: one thread (:class:`~pycni.daemon._intake.Intake`) accepts connections and
reads each request, with a deadline (``read_timeout``) and a size limit
(:data:`~pycni.shim.MAX_REQUEST`, 4 MiB: a larger request is answered with code 6); only a
complete request is acknowledged and takes a worker. Calls for the same container ID run one
after the other in arrival order, others run at once on the pool. Nothing else is serialised
here: host-local takes its store's flock, netfilter changes are one batch per call, and a
call's namespace switches happen on its own threads. A request the agent cannot hand to a
worker (no thread could be started) is answered "standalone": the shim runs it itself.

Stopping (SIGTERM): the socket is removed first, so new calls find no agent and the shims
run them themselves; calls already accepted finish within the grace period. When it ends,
calls not started yet answer "try again later" (code 11) and each ADD still running is
rolled back once it returns (the plugin's DEL, with the ADD's result as prevResult) and
answers code 11 too, so nothing is left half-configured. Only a call still running
``rollback`` seconds later is abandoned by the exiting process.

A DEL answers once the kernel has announced its veth's deletion; the kernel's own clean-up
after that (an RCU barrier, the last references: most of a delete) finishes in a helper
thread (:func:`pycni.host.start_early_deletes`). Stopping waits for those too.

Socket: ``/run/pycni/agent.sock`` by default, mode 0600 in a 0700 directory, and peers other
than root (``SO_PEERCRED``) are refused: any client can make the agent act as root on the
node's network.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import host
from ..invoke import (
    REGISTRY,
    KeyedSerial,
    load_plugin,
    run_in_process,
    set_trace_sink,
    trace_file,
)
from ..shim import (
    ACK,
    DEFAULT_SOCKET,
    MAGIC,
    MAX_REQUEST,
    FramingError,
    encode_message,
    error_output,
    netns_identity,
    read_message,
    request_size,
    try_again_error,
)
from ..spec import DecodingFailure, decode_json_object
from ._cluster import ClusterCollector, ClusterRunner
from ._intake import Intake, Limits, PeerRefusedError, RequestError, send_nowait
from ._log import CallLog
from ._metrics import Metrics, Page, StatusServer
from ._trace import DEFAULT_RING, TraceRing

log = logging.getLogger("pycni.agent")

#: Seconds a stopping agent waits for veth deletes that are still in the kernel after their
#: DEL answered (one takes tens of milliseconds; a device the kernel cannot free, e.g. one
#: still referenced, can hang for good).
DELETE_WAIT = 10.0

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
    #: Seconds after the grace period for running ADDs to return and be rolled back.
    rollback: float = 8.0
    #: Seconds a shim has to send its request after connecting (less than the shim's
    #: acknowledgement deadline: a late request is dropped unacknowledged, never run twice).
    read_timeout: float = 5.0
    #: Connections whose request is still being read; past it the oldest is dropped.
    max_pending: int = 256
    #: Veth deletes left to finish in the kernel after their DEL answered (0: none, each
    #: DEL waits for its syscall).
    early_deletes: int = 4
    #: Calls kept in the trace ring (``/trace``).
    trace_size: int = DEFAULT_RING
    #: The result cache ``/topology`` reads the node's attachments from.
    cache_dir: str = "/var/lib/cni"
    #: Hot-plug and the multus watch cache (:class:`pycni.multi.HotPlug`), on when both this
    #: node's name and the multus configuration (its cniDir holds the pod records) are given;
    #: the kubeconfig (None: the multus configuration's, else in-cluster credentials).
    node_name: str = ""
    multus_config: str = ""
    kubeconfig: str | None = None


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


class _Job:
    """A call handed to the pool; a submission that failed is cancelled if it never ran.

    ``ThreadPoolExecutor.submit`` queues the job before it starts a thread, so a failed
    thread start leaves it queued: whichever of ``run`` and ``cancel`` comes first wins.
    """

    def __init__(self, run: Callable[[], None]) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._state = "queued"

    def run(self) -> None:
        with self._lock:
            if self._state != "queued":
                return
            self._state = "running"
        self._run()

    def cancel(self) -> bool:
        """True if the job will never run."""
        with self._lock:
            if self._state == "queued":
                self._state = "cancelled"
            return self._state == "cancelled"


def _framed_size(data: bytearray) -> int | None:
    try:
        return request_size(data)
    except FramingError as exc:
        raise RequestError(str(exc)) from exc


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

    def __init__(self, config: AgentConfig, cluster: ClusterRunner | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        #: The cluster controller's runner (``--cluster-config``), or None.
        self.cluster = cluster
        if cluster is not None:
            self.metrics.registry.register(ClusterCollector(cluster.controller))
        self._serial = KeyedSerial()
        self._calls = CallLog()
        self.trace = TraceRing(config.trace_size)
        self._previous_sink: Callable[[dict[str, object]], None] | None = None
        self._tracing = False
        self._listener: socket.socket | None = None
        self._socket_ino = 0
        self._netns = b""
        # Threads start as calls need them.
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="pycni-call")
        self._intake: Intake | None = None
        self._http: StatusServer | None = None
        self._stopping = threading.Event()
        self._cut_off = threading.Event()  # the grace period is over
        self._open = 0  # accepted connections not finished
        self._idle = threading.Condition()
        self.hotplug: Any = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Warm the plugins, listen, and serve in background threads.

        Plugins act in the network namespace of the thread that calls this.
        """
        for plugin_type in REGISTRY:
            try:
                load_plugin(plugin_type)
            except Exception as exc:  # a broken plugin must not stop the others
                log.warning("cannot load plugin %s: %s", plugin_type, exc)
        self._netns = netns_identity()
        self._listener = self._listen(self.config.socket_path)
        if self.config.node_name and self.config.multus_config:
            try:
                self._start_hotplug()
            except AgentError:
                self._close_listener()
                raise
        logging.getLogger().addHandler(self._calls)
        # PYCNI_TRACE=off turns tracing off here too: no record is made, /trace stays empty.
        self._tracing = trace_file() is not None
        if self._tracing:
            self._previous_sink = set_trace_sink(self.trace.append)
        if self.config.metrics_address is not None:
            try:
                self._http = StatusServer(self.config.metrics_address, self.metrics,
                                          self.healthy, self.ready, self._pages())
            except OSError as exc:
                self._close_listener()
                raise AgentError(f"cannot serve metrics on {self.config.metrics_address}: "
                                 f"{exc.strerror}") from exc
            self._http.start()
        limits = Limits(max_bytes=MAX_REQUEST, deadline=self.config.read_timeout,
                        max_pending=self.config.max_pending, root_only=True)
        self._intake = Intake(self._listener, limits, name="pycni-accept",
                              complete=_framed_size, on_request=self._take,
                              on_error=self._refuse)
        self._intake.start()
        log.info("listening", extra={"fields": {
            "socket": self.config.socket_path, "workers": self.config.workers,
            "metrics": self.http_address}})
        if self.cluster is not None:
            self.cluster.start()
        # Last: the limit is process-wide, a start that failed above must not leave it set.
        # (A DEL accepted before this line waits for its kernel work, as a standalone one.)
        host.start_early_deletes(self.config.early_deletes)
        sd_notify("READY=1")

    def _start_hotplug(self) -> None:
        from ..multi import HotPlug, MultusConfig, use_watch_cache
        from ..spec import CNIError

        path = self.config.multus_config
        try:
            conf = MultusConfig.parse(decode_json_object(Path(path).read_bytes(), path))
        except (OSError, CNIError) as exc:
            raise AgentError(f"hot-plug needs the multus configuration {path}: {exc}") from exc
        kubeconfig = self.config.kubeconfig or conf.kubeconfig or None
        self.hotplug = HotPlug(conf, self.config.node_name, kubeconfig=kubeconfig)
        self.hotplug.start()
        use_watch_cache(self.hotplug)
        log.info("hot-plug", extra={"fields": {"node": self.config.node_name,
                                               "records": conf.cni_dir}})

    def _pages(self) -> dict[str, Page]:
        """The HTTP endpoint's pages beside /metrics: the trace ring and the topology."""

        def trace(query: str) -> tuple[bytes, str]:
            return self.trace.answer(query), "application/json"

        def topology(query: str) -> tuple[bytes, str]:
            from ._topology import topology_page

            # Reads the kernel of the agent's own namespace: the node its plugins act on.
            return topology_page(query, self.config.cache_dir)

        return {"/trace": trace, "/topology": topology}

    @property
    def http_address(self) -> str | None:
        """``host:port`` of the HTTP endpoint, if any."""
        if self._http is None:
            return None
        host, port = self._http.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def healthy(self) -> bool:
        """The accept loop (and the cluster controller) is alive, or the agent is draining."""
        if self._stopping.is_set():
            return True
        return (self._intake is not None and self._intake.alive()
                and (self.cluster is None or self.cluster.alive()))

    def ready(self) -> bool:
        """Calls are being accepted (and, in cluster mode, the node's CNI config is written)."""
        return (not self._stopping.is_set() and self.healthy()
                and (self.cluster is None or self.cluster.controller.ready))

    @property
    def unfinished(self) -> int:
        """Accepted calls not answered yet."""
        with self._idle:
            return self._open

    def shutdown(self, grace: float | None = None, rollback: float | None = None) -> bool:
        """Stop accepting, wait up to ``grace`` seconds for accepted calls; True if all ended.

        Then calls are cut off: ADDs still running are rolled back as they return, and
        everything answers code 11, for up to ``rollback`` more seconds (see the module
        docstring); :attr:`unfinished` counts the calls still running after that.
        """
        grace = self.config.grace if grace is None else grace
        rollback = self.config.rollback if rollback is None else rollback
        sd_notify("STOPPING=1")
        self._stopping.set()
        self._close_listener()
        drained = self._wait_idle(grace)
        cut = 0
        if not drained:
            cut = self.unfinished
            log.warning("grace period over", extra={"fields": {"in_flight": cut}})
            self._cut_off.set()
            self._wait_idle(rollback)
        left = self.unfinished
        self._pool.shutdown(wait=not left)
        # DELs that answered early: their links are gone, the kernel is still releasing them.
        if not host.stop_early_deletes(DELETE_WAIT):
            log.warning("veth deletes still in the kernel", extra={"fields": {
                "waited": DELETE_WAIT}})
        if self.hotplug is not None:
            from ..multi import use_watch_cache

            use_watch_cache(None)
            self.hotplug.stop()
        if self._http is not None:
            self._http.stop()
        logging.getLogger().removeHandler(self._calls)
        if self._tracing:
            set_trace_sink(self._previous_sink)
        log.info("stopped", extra={"fields": {"drained": drained, "cut_off": cut,
                                               "abandoned": left}})
        return drained

    def _wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        with self._idle:
            while self._open and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            return not self._open

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
        # Requests still being read are closed unacknowledged, and connections still in
        # the backlog are reset: their shims run the call themselves.
        if self._intake is not None:
            self._intake.stop()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    # -- serving -----------------------------------------------------------------------

    def _refuse(self, conn: socket.socket, error: RequestError) -> None:
        """A root-only refusal closes unacknowledged (the shim runs the plugin with its
        caller's rights); a request over a limit is answered with code 6."""
        if isinstance(error, PeerRefusedError):
            return
        err = DecodingFailure(f"the pycni agent refused the request: {error}",
                              f"a CNI request is at most {MAX_REQUEST} bytes")
        send_nowait(conn, ACK + encode_message([b"ok", b"1", error_output(err), b""]))

    def _take(self, conn: socket.socket, request: bytes) -> None:
        """A complete request (on the intake thread): acknowledge it and queue the call."""
        try:
            call = Call.decode(read_message(io.BytesIO(request).read))
        except FramingError as exc:
            log.warning("bad request: %s", exc)
            conn.close()  # unacknowledged: a shim of another protocol runs standalone
            return
        if not send_nowait(conn, ACK):
            conn.close()  # the shim gave up already; it never saw an ACK
            return
        with self._idle:
            self._open += 1
        job = _Job(lambda: self._serve(conn, call))
        try:
            self._pool.submit(job.run)
        except RuntimeError as exc:  # "can't start new thread", or shut down
            if job.cancel():
                log.warning("cannot run a call: %s", exc)
                self._reply(conn, [b"standalone", f"the agent cannot run it: {exc}".encode()])
                self._finished(conn)

    def _finished(self, conn: socket.socket) -> None:
        conn.close()
        with self._idle:
            self._open -= 1
            self._idle.notify_all()

    def _serve(self, conn: socket.socket, call: Call) -> None:
        try:
            cls = load_plugin(call.plugin_type)
        except Exception:
            self._finished(conn)
            raise
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
                self._run(conn, call)
            finally:
                self._finished(conn)

        self._serial.run(key, job)

    def _run(self, conn: socket.socket, call: Call) -> None:
        if self._cut_off.is_set():
            self._reply(conn, [b"ok", b"1", try_again_error(
                call.stdin, "the grace period ended before the call could start",
                "the pycni agent is stopping; try again later"), b""])
            return
        self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            with self._calls.capture() as lines:
                status, out = run_in_process(call.plugin_type, call.env, call.stdin,
                                             source="agent")
                rolled_back = call.command == "ADD" and self._cut_off.is_set()
                if rolled_back:
                    details = self._roll_back(call, status, out)
        finally:
            self.metrics.in_flight.dec()
        seconds = time.perf_counter() - start
        self.metrics.record(call.plugin_type, call.command, seconds, status, out)
        if call.command in PER_CONTAINER or call.command == "GC":
            self.metrics.pools.observe(call.stdin, call.plugin_type)
        if rolled_back:
            status, out = 1, try_again_error(call.stdin, details,
                                             "the pycni agent stopped during the call and "
                                             "undid it; try again later")
        err = "".join(f"{line}\n" for line in lines).encode()
        sent = self._reply(conn, [b"ok", str(status).encode(), out, err])
        log.log(logging.INFO if status == 0 else logging.WARNING, "call", extra={"fields": {
            "plugin": call.plugin_type, "command": call.command,
            "container": call.env.get("CNI_CONTAINERID", ""),
            "ifname": call.env.get("CNI_IFNAME", ""), "status": status,
            "ms": round(seconds * 1000, 2), "replied": sent, "rolled_back": rolled_back,
            **({"error": out.decode(errors="replace")} if status else {})}})

    def _roll_back(self, call: Call, status: int, out: bytes) -> str:
        """Undo an ADD that returned after the grace period: its DEL, as a runtime would
        send it (the ADD's result as prevResult); the details for the caller."""
        stdin = call.stdin
        if status == 0:
            try:
                conf = decode_json_object(call.stdin, "network config")
                conf["prevResult"] = decode_json_object(out, "ADD result")
                stdin = json.dumps(conf).encode()
            except DecodingFailure:
                pass  # DEL without prevResult: plugins find what to delete by name
        del_status, del_out = run_in_process(call.plugin_type, {**call.env, "CNI_COMMAND": "DEL"},
                                             stdin)
        log.warning("rolled back", extra={"fields": {
            "plugin": call.plugin_type, "container": call.env.get("CNI_CONTAINERID", ""),
            "ifname": call.env.get("CNI_IFNAME", ""), "add_status": status,
            "del_status": del_status,
            **({"error": del_out.decode(errors="replace")} if del_status else {})}})
        if del_status:
            return ("the ADD ran past the agent's grace period; undoing it failed: "
                    + del_out.decode(errors="replace"))
        return "the ADD ran past the agent's grace period and was undone"

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


def run_agent(config: AgentConfig, cluster: ClusterRunner | None = None, *,
              release_on_exit: bool = False) -> int:
    """Serve until SIGTERM or SIGINT, then stop gracefully; the process exit status.

    With ``cluster``, its controller runs beside the server; on exit it stops, and with
    ``release_on_exit`` the node's CNI config, masquerade and backend objects are removed
    and its claim given up (an uninstall); otherwise all of it stays for the next start.

    0 when every call finished within the grace period; 1 when calls were cut off (and
    rolled back). A call still running after the rollback period is abandoned: the process
    exits at once, and that call's shim reports "try again later".
    """
    agent = Agent(config, cluster)
    agent.start()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Not one untimed wait: the kernel may deliver SIGTERM to any thread, and then the
        # C handler only flags it for the main thread, which runs the Python handler when
        # it next executes bytecode; a main thread asleep in a lock would never do so.
        while not stop.wait(0.25):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    drained = agent.shutdown()
    if cluster is not None:
        cluster.stop(release=release_on_exit)
    if not agent.unfinished:
        return 0 if drained else 1
    logging.shutdown()
    os._exit(1)  # worker threads still run plugin calls: do not wait for them


__all__ = ["PER_CONTAINER", "Agent", "AgentConfig", "AgentError", "Call", "run_agent",
           "sd_notify"]
