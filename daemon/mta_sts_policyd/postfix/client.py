"""A minimal blocking socketmap client (the `query` command, tests and benchmarks)."""

from __future__ import annotations

import socket

from mta_sts_policyd.errors import NetstringError
from mta_sts_policyd.postfix.socketmap import MAX_REPLY, NetstringDecoder, encode_netstring


class SocketmapClient:
    """Sequential requests over one connection, as Postfix's dict_sockmap does."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = address[5:]
        else:
            host, _, port = address.rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            target = (host, int(port))
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(target)
        except OSError:
            self.sock.close()
            raise
        self._decoder = NetstringDecoder(max_length=MAX_REPLY)
        self._pending: list[bytes] = []

    def query(self, key: str, name: str = "postfix") -> bytes:
        """Send `NAME KEY`, return the reply payload (e.g. b"OK secure ..." or b"NOTFOUND ")."""
        self.sock.sendall(encode_netstring(f"{name} {key}".encode()))
        while not self._pending:
            data = self.sock.recv(65536)
            if not data:
                raise NetstringError("server closed the connection")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SocketmapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
