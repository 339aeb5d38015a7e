"""The DHCP daemon: holds pods' DHCP leases for the short-lived ``dhcp`` IPAM plugin.

A lease must be renewed for as long as the pod lives, which a plugin process cannot do, so
(as with the reference) a long-running daemon does it. The plugin forwards each CNI call over
a root-only unix socket (default ``/run/cni/dhcp.sock``); the daemon:

- ADD: acquires a lease on CNI_IFNAME inside CNI_NETNS (the interface the main plugin made),
  starts a :class:`~pycni.ipam.dhcp.LeaseKeeper` for it and answers the IPAM result; an
  attachment that already holds a live lease gets that lease again;
- DEL: stops keeping the lease and sends DHCPRELEASE; no lease is success;
- CHECK: fails if the attachment holds no lease, or its lease expired;
- STATUS: answers; LimitedConnectivity (51) when leases of the network expired;
- GC: releases the network's leases whose attachment is not in ``cni.dev/valid-attachments``
  (or the older ``cni.dev/attachments``); a GC without either list is an error.

Leases are stored (:class:`~pycni.ipam.dhcp.LeaseStore`) so a restarted daemon keeps
renewing them. On shutdown the daemon stops renewing but releases nothing: the leases run
on at the server and the next daemon picks them up.

Run it with ``pycni dhcp daemon`` or in-process::

    daemon = DhcpDaemon(DaemonOptions(socket_path="/tmp/dhcp.sock", state_dir="/tmp/leases"))
    daemon.start()
    ...
    daemon.close()
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ipam.dhcp import (
    DEFAULT_SOCKET_PATH,
    DEFAULT_STATE_DIR,
    MAX_MESSAGE,
    Attachment,
    DhcpClient,
    DhcpIpamConfig,
    Lease,
    LeaseKeeper,
    LeaseRecord,
    LeaseStore,
    Link,
    NetnsLink,
    State,
    Timing,
    error_reply,
)
from ..spec import (
    CNIError,
    DecodingFailure,
    InternalError,
    InvalidNetworkConfig,
    IOFailure,
    LimitedConnectivity,
    NetworkConfig,
    TryAgainLater,
    UnknownContainer,
    decode_json_object,
    valid_attachments,
)
from ..store import atomic_write
from ._intake import Intake, Limits, RequestError, send_nowait

log = logging.getLogger("pycni.dhcp")

#: systemd socket activation hands the listening socket over as fd 3.
SD_LISTEN_FDS_START = 3
#: Seconds a plugin has to send its request (it writes it at once).
REQUEST_TIMEOUT = 10.0
#: Requests answered at once (each ADD may wait seconds for a server); more are code 11.
MAX_HANDLERS = 128


@dataclass(frozen=True)
class DaemonOptions:
    """The daemon's settings (``pycni dhcp daemon`` flags)."""

    socket_path: str = DEFAULT_SOCKET_PATH
    state_dir: str = DEFAULT_STATE_DIR
    timing: Timing = field(default_factory=Timing)
    #: Prefix for netns paths and the socket path (the daemon runs in a container whose
    #: view of the host's root is mounted there), as the reference's ``-hostprefix``.
    host_prefix: str = ""
    #: Write the daemon's PID here (absolute path), removed on exit.
    pidfile: str = ""


def _lenient_cni_args(value: str) -> dict[str, str]:
    """CNI_ARGS as ``provide[].fromArg`` reads it: ``K=V`` pairs, anything else ignored."""
    out: dict[str, str] = {}
    for item in value.split(";"):
        key, sep, val = item.partition("=")
        if sep:
            out[key] = val
    return out


class DhcpDaemon:
    """The lease table and the socket server (see the module docstring)."""

    def __init__(self, options: DaemonOptions | None = None, *,
                 link_factory: Callable[[str, str], Link] = NetnsLink) -> None:
        self.options = options or DaemonOptions()
        self.store = LeaseStore(self.options.state_dir)
        self._link_factory = link_factory
        self._keepers: dict[str, LeaseKeeper] = {}
        self._pending: dict[str, DhcpClient] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._table = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._socket_file = ""
        self._intake: Intake | None = None
        self._handlers = threading.BoundedSemaphore(MAX_HANDLERS)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Pick up stored leases, then listen on the socket (in a background thread)."""
        if self.options.pidfile and not Path(self.options.pidfile).is_absolute():
            raise InvalidNetworkConfig(f"pidfile {self.options.pidfile!r} is not an "
                                       "absolute path")
        self._restore()
        # The pidfile before the socket: whoever sees the socket may read the pidfile.
        if self.options.pidfile:
            atomic_write(self.options.pidfile, f"{os.getpid()}".encode(), mode=0o644)
        self._listener = self._listen()
        limits = Limits(max_bytes=MAX_MESSAGE, deadline=REQUEST_TIMEOUT, root_only=True)
        self._intake = Intake(self._listener, limits, name="dhcp-daemon", complete=None,
                              on_request=self._take, on_error=self._refuse)
        self._intake.start()
        log.info("DHCP daemon listening on %s", self._socket_file or "an activated socket")

    def close(self) -> None:
        """Stop serving and stop keeping leases (without releasing them: they are stored)."""
        self._stopping.set()
        if self._intake is not None:
            self._intake.stop()
        if self._listener is not None:
            self._listener.close()
        if self._socket_file:
            Path(self._socket_file).unlink(missing_ok=True)
        if self.options.pidfile:
            Path(self.options.pidfile).unlink(missing_ok=True)
        with self._table:
            keepers = list(self._keepers.values())
            self._keepers.clear()
            pending = list(self._pending.values())
        for client in pending:
            client.cancel.set()
        for keeper in keepers:
            keeper.stop(release=False)

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT (for the command line; call from the main thread)."""
        done = threading.Event()

        def _stop(_sig: int, _frame: object) -> None:
            done.set()

        old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not done.wait(1.0):
                pass
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.close()

    def _listen(self) -> socket.socket:
        if (os.environ.get("LISTEN_PID") == str(os.getpid())
                and os.environ.get("LISTEN_FDS") == "1"):
            return socket.socket(fileno=SD_LISTEN_FDS_START)
        path = Path(self.options.host_prefix + self.options.socket_path)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if path.exists() or path.is_symlink():
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # a stale socket from a daemon that died
                else:
                    raise IOFailure(f"another DHCP daemon is listening on {path}")
                finally:
                    probe.close()
            # Bind inside a fresh 0700 directory, restrict the socket to root, then move it
            # into place: nobody else can connect in between.
            tmpdir = Path(tempfile.mkdtemp(dir=path.parent, prefix=".dhcp-sock."))
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                tmp = tmpdir / "sock"
                sock.bind(str(tmp))
                tmp.chmod(0o600)
                tmp.replace(path)
                sock.listen(64)
            except BaseException:
                sock.close()
                raise
            finally:
                for leftover in tmpdir.iterdir():
                    leftover.unlink()
                tmpdir.rmdir()
        except OSError as exc:
            raise IOFailure(f"cannot listen on {path}", exc.strerror or str(exc)) from exc
        self._socket_file = str(path)
        return sock

    @staticmethod
    def _refuse(conn: socket.socket, error: RequestError) -> None:
        send_nowait(conn, json.dumps(error_reply(IOFailure(f"DHCP daemon: {error}"))).encode())

    def _take(self, conn: socket.socket, request: bytes) -> None:
        """A whole request (on the intake thread): answer it on a thread of its own, as an
        ADD waits for a DHCP server for seconds."""
        if not self._handlers.acquire(blocking=False):
            busy = TryAgainLater(f"DHCP daemon: {MAX_HANDLERS} requests are running")
            send_nowait(conn, json.dumps(error_reply(busy)).encode())
            conn.close()
            return
        try:
            threading.Thread(target=self._serve_connection, args=(conn, request), daemon=True,
                             name="dhcp-request").start()
        except RuntimeError as exc:  # can't start new thread
            self._handlers.release()
            send_nowait(conn, json.dumps(error_reply(TryAgainLater(f"DHCP daemon: {exc}"))
                                         ).encode())
            conn.close()

    def _serve_connection(self, conn: socket.socket, data: bytes) -> None:
        with conn:
            try:
                request = decode_json_object(data, "DHCP daemon request")
                reply = self.handle(request)
            except CNIError as exc:
                reply = error_reply(exc)
            except Exception as exc:  # the plugin must get an answer, not a dropped socket
                log.exception("DHCP daemon request failed")
                reply = error_reply(InternalError(f"DHCP daemon: unexpected "
                                                  f"{type(exc).__name__}: {exc}"))
            try:
                conn.sendall(json.dumps(reply).encode())
            except OSError as exc:
                log.info("could not answer a plugin: %s", exc)
            finally:
                self._handlers.release()

    # -- the lease table -------------------------------------------------------------------

    def _lock_for(self, client_id: str) -> threading.Lock:
        with self._table:
            return self._locks.setdefault(client_id, threading.Lock())

    def _keeper(self, client_id: str) -> LeaseKeeper | None:
        with self._table:
            return self._keepers.get(client_id)

    def _save(self, keeper: LeaseKeeper) -> None:
        try:
            self.store.save(LeaseRecord(keeper.attachment, keeper.lease, keeper.state))
        except CNIError as exc:
            log.warning("%s", exc)

    def _forget(self, keeper: LeaseKeeper) -> None:
        cid = keeper.attachment.client_id
        with self._table:
            if self._keepers.get(cid) is keeper:
                del self._keepers[cid]
        self.store.delete(cid)

    def _new_keeper(self, attachment: Attachment, lease: Lease, client: DhcpClient, *,
                    state: State = State.BOUND, restored: bool = False) -> LeaseKeeper:
        return LeaseKeeper(attachment, lease, client, state=state, restored=restored,
                           on_change=self._save, on_gone=self._forget)

    def _client(self, attachment: Attachment) -> DhcpClient:
        return DhcpClient(self._link_factory(attachment.netns, attachment.ifname),
                          attachment.client_id, dict(attachment.options), self.options.timing)

    def _restore(self) -> None:
        for record in self.store.load():
            attachment = record.attachment
            if not Path(attachment.netns).exists():
                log.info("%s: netns %s is gone; dropping its lease", attachment.client_id,
                         attachment.netns)
                self.store.delete(attachment.client_id)
                continue
            keeper = self._new_keeper(attachment, record.lease, self._client(attachment),
                                      state=record.state, restored=True)
            self._keepers[attachment.client_id] = keeper
            if record.state is not State.EXPIRED:
                keeper.start()
            log.info("%s: restored lease on %s (%s)", attachment.client_id,
                     record.lease.address, record.state)

    # -- requests --------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one plugin request (see :mod:`pycni.ipam.dhcp._protocol`)."""
        command = request.get("command")
        if command == "LEASES":
            return {"leases": self.leases()}
        config = request.get("config")
        if not isinstance(config, dict):
            raise DecodingFailure("DHCP daemon request has no network config")
        conf = NetworkConfig.parse(config)
        if command == "STATUS":
            self._status(conf)
            return {}
        if command == "GC":
            self._gc(conf)
            return {}
        attachment = self._attachment(request, conf)
        if command == "ADD":
            return {"result": self._add(attachment).to_json("1.1.0")}
        if command == "DEL":
            self._del(attachment)
            return {}
        if command == "CHECK":
            self._check(attachment, conf)
            return {}
        raise DecodingFailure(f"DHCP daemon: unknown command {command!r}")

    def _attachment(self, request: dict[str, Any], conf: NetworkConfig) -> Attachment:
        fields = {k: request.get(k, "") for k in ("containerID", "netns", "ifname", "args")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise DecodingFailure("DHCP daemon request: containerID, netns, ifname and args "
                                  "must be strings")
        ipam = DhcpIpamConfig.load(conf)
        netns = fields["netns"]
        return Attachment(fields["containerID"], conf.name, fields["ifname"],
                          self.options.host_prefix + netns if netns else "", ipam.priority,
                          ipam.options(_lenient_cni_args(fields["args"])))

    def _add(self, attachment: Attachment) -> Any:
        cid = attachment.client_id
        with self._lock_for(cid):
            keeper = self._keeper(cid)
            if keeper is not None:
                if keeper.alive and keeper.attachment.netns == attachment.netns:
                    return keeper.lease.result(attachment.priority)
                # An expired lease, or the same attachment in a new namespace: start over.
                keeper.stop(release=keeper.alive)
                self._forget(keeper)
            client = self._client(attachment)
            with self._table:
                self._pending[cid] = client
            try:
                lease = client.acquire()
            finally:
                with self._table:
                    self._pending.pop(cid, None)
            keeper = self._new_keeper(attachment, lease, client)
            with self._table:
                self._keepers[cid] = keeper
            self._save(keeper)
            keeper.start()
            log.info("%s: acquired %s from %s", cid, lease.address, lease.server_id)
            return lease.result(attachment.priority)

    def _del(self, attachment: Attachment) -> None:
        cid = attachment.client_id
        with self._table:
            pending = self._pending.get(cid)
        if pending is not None:  # abandon an ADD still waiting for a server
            pending.cancel.set()
        with self._lock_for(cid):
            keeper = self._keeper(cid)
            if keeper is None:
                self.store.delete(cid)
                return
            keeper.stop(release=True)
            self._forget(keeper)

    def _check(self, attachment: Attachment, conf: NetworkConfig) -> None:
        keeper = self._keeper(attachment.client_id)
        if keeper is None:
            raise UnknownContainer(f"dhcp: no DHCP lease for {attachment.client_id}")
        if not keeper.alive:
            raise UnknownContainer(f"dhcp: the DHCP lease of {attachment.client_id} on "
                                   f"{keeper.lease.address} expired", keeper.reason)
        prev = conf.prev_result
        if prev is not None and prev.ips and not any(
                ip.address.ip == keeper.lease.address.ip for ip in prev.ips):
            raise UnknownContainer(f"dhcp: leased address {keeper.lease.address.ip} of "
                                   f"{attachment.client_id} is not in prevResult")

    def _status(self, conf: NetworkConfig) -> None:
        with self._table:
            lost = [k for k in self._keepers.values()
                    if k.attachment.network == conf.name and not k.alive]
        if lost:
            names = ", ".join(f"{k.attachment.client_id} ({k.lease.address.ip})"
                              for k in lost[:5])
            raise LimitedConnectivity(
                f"dhcp: {len(lost)} DHCP lease(s) of network {conf.name!r} expired",
                f"no DHCP server renewed: {names}")

    def _gc(self, conf: NetworkConfig) -> None:
        valid = valid_attachments(conf.raw)
        with self._table:
            stale = [k for k in self._keepers.values()
                     if k.attachment.network == conf.name
                     and (k.attachment.container_id, k.attachment.ifname) not in valid]
        for keeper in stale:
            with self._lock_for(keeper.attachment.client_id):
                keeper.stop(release=True)
                self._forget(keeper)
            log.info("%s: garbage-collected lease on %s", keeper.attachment.client_id,
                     keeper.lease.address)

    def leases(self) -> list[dict[str, Any]]:
        """The lease table, for ``LEASES`` requests."""
        with self._table:
            keepers = list(self._keepers.values())
        return [{"clientID": k.attachment.client_id, "containerID": k.attachment.container_id,
                 "network": k.attachment.network, "ifname": k.attachment.ifname,
                 "netns": k.attachment.netns, "address": str(k.lease.address),
                 "server": str(k.lease.server_id), "state": str(k.state),
                 "renewals": k.renewals, "expiresAt": k.lease.expires_at, "reason": k.reason}
                for k in keepers]


def run_daemon(options: DaemonOptions) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT (``pycni dhcp daemon``)."""
    DhcpDaemon(options).serve_forever()


__all__ = ["DaemonOptions", "DhcpDaemon", "run_daemon"]
