"""What a sender accepts from a policy host's HTTP answer (RFC 8461 §3.2-3.3), as pure rules.

The fetcher (policy_fetch.py) and `check` (tools/check/policy_host.py) both judge with these,
so the operator's check objects to exactly what a sender objects to.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_BODY = 65_536
"""RFC 8461 §3.3 suggests 64 KB; reading stops and fails at the 65537th byte."""


def size_problem(size: int) -> str | None:
    """A policy file of `size` bytes that no sender would read (this daemon's fetch stops at
    MAX_BODY), or None: the rule `generate`, `publish` and the policy host apply before a
    file is written or served."""
    if size <= MAX_BODY:
        return None
    return f"{size} bytes, larger than the {MAX_BODY} bytes a sender reads (RFC 8461 §3.3)"


def redirect_problem(url: str, status: int, location: str | None) -> str | None:
    """A 3xx answer: reported, never followed (RFC 8461 §3.3)."""
    if not 300 <= status < 400:
        return None
    where = location or "(no Location header)"
    return f"{url}: HTTP {status} redirect to {where} (redirects are not followed, RFC 8461 §3.3)"


def status_problem(url: str, status: int) -> str | None:
    if status == 200 or 300 <= status < 400:
        return None
    return f"{url}: HTTP {status} (only 200 is accepted, RFC 8461 §3.3)"


def content_type_problem(url: str, headers: Mapping[str, str]) -> str | None:
    """Content-Type must be text/plain (RFC 8461 §3.2), with no Content-Encoding to undo.

    `headers` is looked up with lower-case names (httpx.Headers, or a dict of lower-case keys).
    """
    content_type = headers.get("content-type")
    if content_type is None:
        return f"{url}: no Content-Type (text/plain required)"
    if content_type.split(";", 1)[0].strip().lower() != "text/plain":
        return f"{url}: Content-Type {content_type!r} is not text/plain (RFC 8461 §3.2)"
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        return f"{url}: unsupported Content-Encoding {encoding!r}"
    return None
