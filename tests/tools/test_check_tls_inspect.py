"""What `check` says of a policy host address that connects and then drops the handshake."""

from __future__ import annotations

from mta_sts_policyd.tools.check.tls_inspect import inspect_tls
from support.resetting_server import resetting_server


async def test_a_reset_after_connecting_is_a_tls_failure_with_a_reason() -> None:
    """It was POLICY_CONNECT_FAILED ("no TCP connection") with an empty reason."""
    with resetting_server() as port:
        seen = await inspect_tls("127.0.0.1", port, "mta-sts.example.test", None, 5.0)
    assert seen.connect_error is None
    assert seen.tls_error is not None and seen.tls_error.startswith("TLS handshake failed:")
    assert seen.tls_error.rstrip(")").split("(")[-1]  # a reason, not empty
