"""Reaching a server on this namespace's loopback from inside a test namespace."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from ..host import run_in_netns, set_link_up


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _splice(conn: socket.socket, upstream: socket.socket) -> None:
    """Both directions until either side ends; then both sockets are closed."""
    back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
    back.start()
    _pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


@contextlib.contextmanager
def forward_into(netns: str, port: int) -> Iterator[None]:
    """127.0.0.1:``port`` inside ``netns`` reaches 127.0.0.1:``port`` here (an API server
    on this namespace's loopback): plugins running there find it where a node's would."""
    run_in_netns(netns, set_link_up, "lo")

    def listen() -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        return sock

    server = run_in_netns(netns, listen)  # the socket stays in netns

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # the server socket was closed
            try:
                upstream = socket.create_connection(("127.0.0.1", port))
            except OSError:
                conn.close()  # the server is not there (yet): this client sees EOF
                continue
            threading.Thread(target=_splice, args=(conn, upstream), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
