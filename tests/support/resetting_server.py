"""TCP servers that accept one connection, read the client's first flight, then fail: reset it
(a policy host or MX that fails after the connection was made, not a refused connect) or stay
silent until the test ends (one that accepts and never answers)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def resetting_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """Listen on `host`:`port` (0: any free port) and yield the port; the one connection is
    reset after the client's first flight."""

    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with _one_connection(host, port, reset) as bound:
        yield bound


@contextmanager
def silent_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """Like `resetting_server`, but the connection is held open, unanswered, until exit."""
    done = threading.Event()

    def hold(conn: socket.socket) -> None:
        done.wait(30)

    with _one_connection(host, port, hold, release=done.set) as bound:
        yield bound


@contextmanager
def _one_connection(
    host: str,
    port: int,
    then: Callable[[socket.socket], None],
    release: Callable[[], None] = lambda: None,
) -> Iterator[int]:
    """The server serves one connection and ends (`release` ends `then`); on exit it is joined
    and closed (a thread left in accept() would keep the port listening for later tests even
    after close())."""
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
            then(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        release()
        thread.join(10)
        listener.close()
    assert not thread.is_alive(), "the server was never connected to"
