"""pycni.testing's own helpers, where a test namespace is involved."""

from __future__ import annotations

import socket
import threading

import pytest

from pycni.host import run_in_netns
from pycni.testing import forward_into

pytestmark = pytest.mark.netns


def _exchange(port: int, line: bytes) -> bytes:
    """Connect to 127.0.0.1:``port``, send ``line``, return what comes back before EOF
    (no half-close: the forwarder ends both directions when one ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(line)
        out = b""
        while data := sock.recv(4096):
            out += data
        return out


def test_forward_into_survives_an_upstream_that_is_not_there_yet(netns: str) -> None:
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    port = upstream.getsockname()[1]
    with forward_into(netns, port):
        # nothing listens here yet: the connection is closed (EOF), not left hanging
        # (nothing sent: a socket closed with unread data would answer with a reset)
        assert run_in_netns(netns, _exchange, port, b"") == b""
        upstream.listen(1)

        def echo() -> None:
            conn, _ = upstream.accept()
            with conn:
                conn.sendall(conn.recv(4096))

        server = threading.Thread(target=echo, daemon=True)
        server.start()
        assert run_in_netns(netns, _exchange, port, b"ping\n") == b"ping\n"
        server.join(5)
    upstream.close()
