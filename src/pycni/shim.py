"""The plugin executable: a stdlib-only forwarder to the node agent, or the plugin itself.

``pycni install`` writes one executable per plugin type: a few lines that put pycni's
directory on ``sys.path`` and call :func:`main` with the type, the agent's socket path and
the ``sys.path`` entries pycni needs. The interpreter starts with ``-IS`` (isolated, no
``site``), so a call costs about a bare interpreter start: this module comes from its cached
bytecode and imports only ``posix`` and ``_socket`` (C modules; ``import socket`` or
``json`` alone would cost ~15 ms). ``pycni/__init__`` is the only other module loaded.

With an agent (``pycni agent``) listening on the socket, the shim sends the CNI_* environment
and stdin, and writes back the exit status, stdout and stderr the agent's in-process run
produced. Without one (no socket, connection refused) it runs the plugin itself, exactly as
the agent would. The agent acknowledges a connection with one byte as soon as it accepts it:

* the connection fails before that byte: the agent never saw the call, so the shim runs
  it standalone (an agent stopping refuses new connections that way);
* it fails after: the call may have been half done by the agent, so the shim prints the
  spec's "try again later" error (code 11), which runtimes retry. Plugins undo a failed
  ADD and DEL is idempotent, so a retry converges.

The agent acknowledges a request once it has read all of it. The shim never waits without
end: connecting (:data:`CONNECT_TIMEOUT`) and the acknowledgement (:data:`ACK_TIMEOUT`) time
out into a standalone run, the reply (:data:`CALL_TIMEOUT` from the start) into code 11. An
agent that works acknowledges within milliseconds; the acknowledgement deadline only covers
one that is wedged. A request larger than the agent takes (:data:`MAX_REQUEST`) is not sent:
the shim runs such a call itself.

The agent also answers "standalone" when it cannot run the call as the caller would (it
lives in another network namespace than the caller), and the shim then runs it itself.

Wire format, both directions: a message is a 4-byte big-endian count of parts, then each
part as a 4-byte big-endian length and its bytes. Request parts: :data:`MAGIC`, plugin type,
the caller's netns identity (``dev:ino`` of ``/proc/self/ns/net``), stdin, then key and value
of each CNI_* variable. Reply parts: ``ok``, exit status (decimal), stdout, stderr; or
``standalone`` and a reason.
"""

# This file runs with -IS before any of pycni can be imported: it must stay free of
# Python-level stdlib modules (socket, json, os, struct, typing, even __future__: each is
# a file to find and compile). Annotations naming typing constructs are therefore quoted.
import _socket
import posix
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import NoReturn

    from .spec import CNIError

#: First part of every request; bumped if the framing ever changes.
MAGIC = b"pycni-agent/1"
#: The byte the agent sends on accepting a connection.
ACK = b"\x06"
#: Where ``pycni agent`` listens unless told otherwise.
DEFAULT_SOCKET = "/run/pycni/agent.sock"
#: Limits a reader enforces on a message (a config with prevResult is a few kB).
MAX_PARTS = 512
MAX_PART = 64 << 20
#: The largest request the agent reads, framing included: a CNI config with its prevResult
#: is a few kB, a large conflist entry well under 1 MiB.
MAX_REQUEST = 4 << 20
#: Seconds to connect to the agent's socket (with a deadline set, connect() to a unix socket
#: whose listen backlog is full fails at once instead of blocking).
CONNECT_TIMEOUT = 5.0
#: Seconds from connecting until the agent has acknowledged the whole request.
ACK_TIMEOUT = 10.0
#: Seconds from connecting until the reply: longer than any call a runtime still waits for
#: (kubelet gives up on a sandbox after 2 minutes).
CALL_TIMEOUT = 300.0


def encode_message(parts: "Sequence[bytes]") -> bytes:
    """One framed message: part count, then (length, bytes) per part."""
    out = [len(parts).to_bytes(4, "big")]
    for part in parts:
        out.append(len(part).to_bytes(4, "big"))
        out.append(part)
    return b"".join(out)


class FramingError(Exception):
    """The peer closed the connection mid-message or sent a malformed one."""


def read_message(recv: "Callable[[int], bytes]") -> list[bytes]:
    """Read one message through ``recv(n)`` (returns b"" at end of stream).

    FramingError if the stream ends inside the message or a limit is exceeded.
    """

    def exact(n: int) -> bytes:
        chunks = []
        while n:
            chunk = recv(min(n, 1 << 20))
            if not chunk:
                raise FramingError("connection closed mid-message")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    count = int.from_bytes(exact(4), "big")
    if count > MAX_PARTS:
        raise FramingError(f"message has {count} parts, the limit is {MAX_PARTS}")
    parts = []
    for _ in range(count):
        size = int.from_bytes(exact(4), "big")
        if size > MAX_PART:
            raise FramingError(f"message part of {size} bytes, the limit is {MAX_PART}")
        parts.append(exact(size) if size else b"")
    return parts


def request_size(data: "bytes | bytearray") -> int | None:
    """Length of the request message at the start of ``data``; None while it is incomplete.

    For a reader that gets bytes as they arrive. FramingError as soon as the headers show
    the message breaks :data:`MAX_PARTS` or :data:`MAX_REQUEST`.
    """
    if len(data) < 4:
        return None
    count = int.from_bytes(data[:4], "big")
    if count > MAX_PARTS:
        raise FramingError(f"request has {count} parts, the limit is {MAX_PARTS}")
    pos = 4
    for _ in range(count):
        if len(data) < pos + 4:
            return None
        pos += 4 + int.from_bytes(data[pos:pos + 4], "big")
        if pos > MAX_REQUEST:
            raise FramingError(f"request larger than the limit of {MAX_REQUEST} bytes")
    return pos if len(data) >= pos else None


def netns_identity() -> bytes:
    """``dev:ino`` of the calling thread's network namespace."""
    st = posix.stat("/proc/thread-self/ns/net")
    return f"{st.st_dev}:{st.st_ino}".encode()


def cni_environ(environ: "Mapping[bytes, bytes]") -> list[bytes]:
    """The CNI_* variables, flattened to key, value, key, value..., unchanged."""
    out: list[bytes] = []
    for key, value in environ.items():
        if key.startswith(b"CNI_"):
            out += (key, value)
    return out


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := posix.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def _connect(path: str, timeout: float) -> _socket.socket | None:
    """A connection to the agent, or None when none listens there."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        # Missing socket, refused (agent stopped or stopping), permission, or a full
        # backlog (nobody accepts): run standalone.
        sock.close()
        return None
    return sock


def error_output(err: "CNIError", stdin: bytes = b"") -> bytes:
    """``err`` as a plugin prints it, in the cniVersion of the config in ``stdin``.

    A rare path: it may import pycni's stdlib-only spec and skel modules.
    """
    from .skel import error_output as plugin_error_output

    return plugin_error_output(err, stdin)


def try_again_error(stdin: bytes, details: str,
                    msg: str = "the pycni agent did not complete the call; try again later"
                    ) -> bytes:
    """The CNI error (code 11) for a call the agent dropped, formatted as plugins do."""
    from .spec import TryAgainLater

    return error_output(TryAgainLater(msg, details), stdin)


def run_standalone(plugin_type: str, paths: "Sequence[str]", stdin: bytes | None) -> "NoReturn":
    """Run the plugin in this process, as ``pycni install`` used to (no agent).

    Through :mod:`pycni.invoke`, whose lazy ``__init__`` loads only its registry module
    (stdlib ``importlib``) on this path.
    """
    import gc

    # The cyclic collector would walk the modules this call imports, over and over as they
    # load (a twentieth of the call's instructions), to find next to no garbage: a call
    # makes few reference cycles and its process ends with it.
    gc.disable()
    sys.path[:0] = [p for p in paths if p not in sys.path]
    from pycni._lazy import defer_modules

    defer_modules("inspect")
    from pycni.invoke import REGISTRY, plugin_main, run_in_process

    if stdin is None:
        # A VERSION probe, or stdin that cannot be read, runs as the plain executable (the
        # plugin reports the read error itself); any other call goes through
        # run_in_process, which traces it.
        if posix.environ.get(b"CNI_COMMAND") == b"VERSION":
            plugin_main(plugin_type)
        try:
            stdin = _read_fd(0)
        except OSError:
            plugin_main(plugin_type)
    if plugin_type not in REGISTRY:
        raise SystemExit(f"pycni has no plugin of type {plugin_type!r}")
    # What the plugin executable sets up (Plugin.main): pyroute2's logs in one line each.
    # skel is loaded with the plugin anyway.
    from pycni.skel import quiet_library_logs

    quiet_library_logs()
    # stdin was already read for the agent: feed the same bytes.
    environ = {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape")
               for k, v in posix.environ.items()}
    status, out = run_in_process(plugin_type, environ, stdin)
    _write_fd(1, out)
    _exit_now(status)


def _exit_now(status: int) -> "NoReturn":
    """Exit without the interpreter's teardown, once a standalone call is over.

    Tearing down the modules a plugin loaded (clearing them, a full garbage collection
    over everything, freeing it all) costs about a tenth of a standalone call's
    instructions, for memory the kernel takes back anyway. What the teardown would still
    do that matters runs here: exit handlers (``atexit``, ``weakref.finalize``) and the
    standard streams' buffers. Every file the call wrote was closed by then (``with``
    blocks, ``os.close``). A thread that is not a daemon (none of pycni's) would be waited
    for by a normal exit, so with one alive the exit is a normal one.
    """
    import atexit
    import contextlib

    threading = sys.modules.get("threading")
    if threading is not None and any(t.is_alive() and not t.daemon
                                     for t in threading.enumerate()
                                     if t is not threading.main_thread()):
        raise SystemExit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    posix._exit(status)


def forward(sock: _socket.socket, plugin_type: str, environ: "Mapping[bytes, bytes]",
            stdin: bytes, *, ack_timeout: float = ACK_TIMEOUT,
            call_timeout: float = CALL_TIMEOUT) -> tuple[str, list[bytes]]:
    """Send one call; ("ok", [status, stdout, stderr]), ("standalone", [reason]) or ("retry",
    [details]) when the agent took the call and then went away or ran out of time."""
    deadline = time.monotonic() + call_timeout
    request = encode_message([MAGIC, plugin_type.encode(), netns_identity(), stdin,
                              *cni_environ(environ)])
    if len(request) > MAX_REQUEST:
        return "standalone", [b"the request is larger than the agent takes"]
    sock.settimeout(ack_timeout)
    try:
        sock.sendall(request)
        ack = sock.recv(1)
    except OSError:
        # The agent closed the connection before it had the whole request, or did not
        # acknowledge it in time: it has not taken the call (a failed send means that even
        # if the ACK had arrived).
        ack = b""
    if ack != ACK:
        return "standalone", [b"the agent closed the connection before accepting it"]

    def recv(n: int) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        return sock.recv(n)

    try:
        reply = read_message(recv)
    except TimeoutError:
        reply = [b"", f"no reply from the agent within {call_timeout:g} s".encode()]
    except (OSError, FramingError) as exc:
        reply = [b"", str(exc).encode()]
    if len(reply) == 4 and reply[0] == b"ok":
        return "ok", reply[1:]
    if len(reply) == 2 and reply[0] in (b"standalone", b""):
        return ("standalone" if reply[0] else "retry"), reply[1:]
    return "retry", [b"the agent sent a reply this shim does not understand"]


def main(plugin_type: str, socket_path: str = DEFAULT_SOCKET,
         paths: "Sequence[str]" = (),
         deadlines: "tuple[float, float, float]" = (CONNECT_TIMEOUT, ACK_TIMEOUT, CALL_TIMEOUT)
         ) -> "NoReturn":
    """Entry point of an installed plugin executable; ``deadlines`` are (connect, ack, call)
    seconds."""
    connect_timeout, ack_timeout, call_timeout = deadlines
    sock = _connect(socket_path, connect_timeout)
    if sock is None:
        run_standalone(plugin_type, paths, None)
    environ = posix.environ
    # As the plugins' skel: VERSION does not read stdin (a probe from a terminal must not hang).
    try:
        stdin = b"" if environ.get(b"CNI_COMMAND") == b"VERSION" else _read_fd(0)
    except OSError:
        sock.close()
        run_standalone(plugin_type, paths, None)  # the plugin reports the read error itself
    try:
        kind, parts = forward(sock, plugin_type, environ, stdin, ack_timeout=ack_timeout,
                              call_timeout=call_timeout)
    finally:
        sock.close()
    if kind == "standalone":
        run_standalone(plugin_type, paths, stdin)
    if kind == "retry":
        _write_fd(1, try_again_error(stdin, parts[0].decode(errors="replace")))
        raise SystemExit(1)
    status, out, err = parts
    _write_fd(1, out)
    if err:
        _write_fd(2, err)
    raise SystemExit(int(status))
