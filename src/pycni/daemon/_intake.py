"""Accepting connections and reading whole requests on one thread, before any worker is used.

The agent's socket, the DHCP daemon's socket and the metrics port all take short requests
from clients that may be slow, idle or hostile. A thread per connection lets 300 idle
connections make 300 threads, and a client that trickles its bytes holds a worker while it
does. :class:`Intake` instead reads every pending connection from one ``epoll`` loop, each
with a deadline and a size limit, and hands a request to its owner only once it is complete.
Past ``max_pending`` connections still being read, the oldest is dropped.

Unix sockets can be restricted to root peers: the kernel records the credentials of the
process that called ``connect()`` (``SO_PEERCRED``), whatever the socket file's mode says.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("pycni.intake")

#: ``struct ucred``: pid, uid, gid.
_UCRED = struct.Struct("3i")


class RequestError(Exception):
    """A request breaks a limit or is malformed; the message says which."""


class PeerRefusedError(RequestError):
    """The peer is not root on a root-only socket."""


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected to a unix socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


@dataclass(frozen=True)
class Limits:
    """How much an :class:`Intake` reads and for how long."""

    #: Bytes of one request.
    max_bytes: int
    #: Seconds from accept until the request is complete.
    deadline: float
    #: Connections being read at once.
    max_pending: int = 256
    #: Only peers with uid 0 (unix sockets).
    root_only: bool = False


@dataclass
class _Pending:
    conn: socket.socket
    expires: float
    data: bytearray = field(default_factory=bytearray)


class Intake:
    """Reads requests from ``listener`` on a background thread (``start``/``stop``).

    ``complete(data)`` returns the request's length once ``data`` holds all of it (None
    while not; RequestError to refuse it); with ``complete=None`` a request ends when the
    client shuts down its side. Then ``on_request(conn, request)`` runs on the intake
    thread, so it must not block: it hands ``conn`` (now blocking) to a worker or answers
    and closes it. ``on_error(conn, error)`` may send a refusal before the intake closes
    the connection (PeerRefusedError, or a request over a limit). An exception in either is
    logged and costs that connection only.
    """

    def __init__(self, listener: socket.socket, limits: Limits, *, name: str,
                 complete: Callable[[bytearray], int | None] | None,
                 on_request: Callable[[socket.socket, bytes], None],
                 on_error: Callable[[socket.socket, RequestError], None] | None = None
                 ) -> None:
        self.limits = limits
        self._listener = listener
        self._name = name
        self._complete = complete
        self._on_request = on_request
        self._on_error = on_error
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        # One receive buffer for the loop: recv(65536) allocated 64 KiB per read and shrank
        # it to the bytes received, and that churn in the thread's malloc arena (trimmed
        # and faulted in again) cost more than the rest of reading a request.
        self._buffer = memoryview(bytearray(65536))
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()

    def alive(self) -> bool:
        """The intake thread runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop accepting; connections still being read are closed unanswered."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.ident is not None:
            self._thread.join()
        for pending in self._pending.values():
            pending.conn.close()
        self._pending.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            timeout = None
            if self._pending:
                first = min(p.expires for p in self._pending.values())
                timeout = max(0.0, first - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if self._stopping.is_set():
                    return
                try:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is not self._wake_r:
                        self._read(key.fd)
                except Exception:  # one connection must not take the loop down
                    log.exception("%s: serving a connection failed", self._name)
                    if key.fileobj is not self._listener:
                        self._drop(key.fd)
            self._expire()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("%s: accept failed: %s", self._name, exc)
            time.sleep(0.05)  # EMFILE and friends: back off instead of spinning
            return
        if self.limits.root_only:
            try:
                pid, uid, _ = peer_credentials(conn)
            except OSError:
                conn.close()
                raise
            if uid != 0:
                log.warning("%s: refused a connection from pid %d, uid %d: root only",
                            self._name, pid, uid)
                self._refuse(conn, PeerRefusedError(f"only root may use this socket, the peer "
                                               f"(pid {pid}) has uid {uid}"))
                return
        while len(self._pending) >= self.limits.max_pending:
            _, oldest = self._pending.popitem(last=False)
            log.warning("%s: %d connections are being read; dropped the oldest",
                        self._name, self.limits.max_pending)
            self._selector.unregister(oldest.conn)
            oldest.conn.close()
        conn.setblocking(False)
        self._pending[conn.fileno()] = _Pending(conn, time.monotonic() + self.limits.deadline)
        self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, fd: int) -> None:
        pending = self._pending.get(fd)
        if pending is None:
            return
        try:
            got = pending.conn.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        pending.data += self._buffer[:got]
        try:
            size = self._size(pending.data, eof=not got)
        except RequestError as exc:
            log.warning("%s: refused a request: %s", self._name, exc)
            self._forget(fd)
            self._refuse(pending.conn, exc)
            return
        if size is None and not got:
            self._drop(fd)  # closed mid-request: nothing to answer
            return
        if size is None:
            return
        self._forget(fd)
        conn = pending.conn
        conn.setblocking(True)
        try:
            self._on_request(conn, bytes(pending.data[:size]))
        except Exception:
            conn.close()
            raise

    def _size(self, data: bytearray, *, eof: bool) -> int | None:
        if len(data) > self.limits.max_bytes:
            raise RequestError(f"request larger than the limit of {self.limits.max_bytes} bytes")
        if self._complete is None:
            return len(data) if eof else None
        return self._complete(data)

    def _refuse(self, conn: socket.socket, error: RequestError) -> None:
        try:
            if self._on_error is not None:
                self._on_error(conn, error)
        finally:
            conn.close()

    def _forget(self, fd: int) -> None:
        pending = self._pending.pop(fd)
        self._selector.unregister(pending.conn)

    def _drop(self, fd: int) -> None:
        if fd in self._pending:
            conn = self._pending[fd].conn
            self._forget(fd)
            conn.close()

    def _expire(self) -> None:
        now = time.monotonic()
        late = [fd for fd, p in self._pending.items() if p.expires <= now]
        for fd in late:
            log.warning("%s: a client sent no complete request within %g s",
                        self._name, self.limits.deadline)
            self._drop(fd)


def send_nowait(conn: socket.socket, data: bytes) -> bool:
    """Send a short message without blocking the intake thread; False if it did not all fit.

    A fresh connection's send buffer takes far more than a refusal or an acknowledgement.
    """
    try:
        conn.setblocking(False)
        return conn.send(data) == len(data)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            conn.setblocking(True)


__all__ = ["Intake", "Limits", "PeerRefusedError", "RequestError", "peer_credentials",
           "send_nowait"]
