"""What `check` says of a policy host address that connects and then drops the handshake."""

from __future__ import annotations

import socket
import struct
import threading

from mta_sts_policyd.tools.check.tls_inspect import inspect_tls


async def test_a_reset_after_connecting_is_a_tls_failure_with_a_reason() -> None:
    """It was POLICY_CONNECT_FAILED ("no TCP connection") with an empty reason."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def reset_after_client_hello() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    thread = threading.Thread(target=reset_after_client_hello, daemon=True)
    thread.start()
    try:
        seen = await inspect_tls("127.0.0.1", port, "mta-sts.example.test", None, 5.0)
    finally:
        thread.join(5)
        listener.close()
    assert seen.connect_error is None
    assert seen.tls_error is not None and seen.tls_error.startswith("TLS handshake failed:")
    assert seen.tls_error.rstrip(")").split("(")[-1]  # a reason, not empty
