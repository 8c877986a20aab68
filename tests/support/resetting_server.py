"""A TCP server that accepts one connection, reads the client's first flight, then resets:
a policy host or MX that fails after the connection was made (not a refused connect)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def resetting_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """Listen on `host`:`port` (0: any free port) and yield the port. The server serves one
    connection and ends; on exit it is joined and closed (a thread left in accept() would keep
    the port listening for later tests even after close())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen()
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)  # the ClientHello: the client has connected and sent it
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(10)
        listener.close()
    assert not thread.is_alive(), "the resetting server was never connected to"
