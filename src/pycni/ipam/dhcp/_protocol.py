"""The plugin <-> daemon protocol: one JSON request and one JSON reply per connection.

The plugin connects to the daemon's unix socket, writes the request and shuts its side
down; the daemon answers and closes. A request::

    {"command": "ADD", "containerID": "...", "netns": "/run/netns/x", "ifname": "eth0",
     "args": "K=V;...", "config": {... the plugin's stdin ...}}

``command`` is ADD, DEL, CHECK, STATUS, GC or LEASES (a listing for operators and tests).
A reply is ``{"result": {...}}`` (ADD, in cniVersion 1.1.0), ``{"leases": [...]}``,
``{}`` (success without output) or ``{"error": {"code", "msg", "details"}}``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from ...spec import CNIError, DecodingFailure, IOFailure, decode_json_object

#: The largest request or reply either side reads.
MAX_MESSAGE = 1 << 20
#: How long the plugin waits to connect; the reply may take as long as acquiring a lease.
CONNECT_TIMEOUT = 5.0


class DaemonUnreachable(IOFailure):
    """Nothing answers on the daemon's socket."""


def read_all(conn: socket.socket) -> bytes:
    """Read until the peer shuts down its side; DecodingFailure past MAX_MESSAGE."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            if not chunks:
                raise
            break  # a unix peer that closed with our request unread: its answer came first
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise DecodingFailure(f"DHCP daemon message larger than {MAX_MESSAGE} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def call_daemon(socket_path: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send ``request``; the reply object. A CNI error reply is raised as its CNIError;
    DaemonUnreachable when the socket is missing or nobody listens."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        try:
            conn.connect(socket_path)
        except OSError as exc:
            raise DaemonUnreachable(f"error dialing DHCP daemon at {socket_path}",
                                    f"{exc.strerror or exc}; is `pycni dhcp daemon` "
                                    "running?") from exc
        conn.settimeout(None)
        try:
            try:
                conn.sendall(json.dumps(request).encode())
                conn.shutdown(socket.SHUT_WR)
            except BrokenPipeError:
                pass  # the daemon refused the request before reading it: read why
            data = read_all(conn)
        except OSError as exc:
            raise IOFailure(f"talking to the DHCP daemon at {socket_path} failed",
                            exc.strerror or str(exc)) from exc
    finally:
        conn.close()
    if not data:
        raise IOFailure(f"the DHCP daemon at {socket_path} closed the connection without "
                        "answering")
    reply = decode_json_object(data, "DHCP daemon reply")
    if "error" in reply:
        raise CNIError.from_json(reply["error"])
    return reply


def error_reply(exc: CNIError) -> dict[str, Any]:
    """The reply for a failed request."""
    err = exc.to_json("1.1.0")
    err.pop("cniVersion", None)
    return {"error": err}
