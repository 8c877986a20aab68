"""Policy file parsing (RFC 8461 §3.2; spec A31-A37)."""

from __future__ import annotations

from mta_sts_policyd.sts.model import Policy


def parse_policy(body: bytes) -> Policy:
    """Parse and validate a policy body; raise PolicySyntaxError naming the line and reason."""
    raise NotImplementedError
