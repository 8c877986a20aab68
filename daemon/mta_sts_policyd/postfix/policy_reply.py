"""Postfix policy-table replies for an MTA-STS policy (pure).

`secure match=... servername=hostname`, the Postfix >= 3.10 TLSRPT attributes, and the
validation that keeps anything from the network out of a reply (RFC 8461 §4.1 patterns,
Postfix's `.x` any-depth form). See docs/conformance.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mta_sts_policyd.postfix.socketmap import MAX_REPLY, REPLY_NOTFOUND, reply_ok
from mta_sts_policyd.sts.match import mx_matches
from mta_sts_policyd.sts.model import Mode, Policy
from mta_sts_policyd.sts.names import hostname_problem

_UNSAFE_IN_BRACES_RE = re.compile(r"[{}\x00-\x1f\x7f]")
NO_MX_MATCH = "no-mx-host-matches-the-policy.invalid"
"""The `match=` entry when none of the domain's MX hosts matches its policy: `.invalid` is
reserved (RFC 6761 §6.4), so no certificate a CA issues can name it."""


def render_policy_reply(
    policy: Policy,
    policy_domain: str,
    *,
    sts_attributes: bool,
    mx_hosts: Sequence[str] | None = None,
    max_size: int = MAX_REPLY,
) -> bytes:
    """The whole reply payload for a valid policy (docs/conformance.md: STS-5-enforce,
    STS-5-testing-none).

    enforce -> `OK secure match=... servername=hostname` (+ the Postfix 3.10 attributes
    when `sts_attributes`, for Postfix >= 3.10 only: docs/conformance.md: PF-sts-attributes);
    testing/none -> NOTFOUND. Every mx pattern is re-validated here, so a hand-made Policy cannot
    inject attributes; if none survives, or even the bare `secure` reply exceeds `max_size`, the
    answer is NOTFOUND: an oversized reply would defer mail, and remote trouble fails open (RFC 8461
    §3.3). `mx_hosts`, when given, narrows `*.x` patterns to the MX names they match (see
    `match_list`). Same input, same bytes.
    """
    if policy.mode is not Mode.ENFORCE:
        return REPLY_NOTFOUND
    patterns = valid_mx_patterns(policy.mx)
    if not patterns:
        return REPLY_NOTFOUND
    core = ["secure", "match=" + ":".join(match_list(patterns, mx_hosts)), "servername=hostname"]
    candidates = [core]
    domain = _valid_hosts([policy_domain])
    if sts_attributes and domain:
        tlsrpt = [f"policy_type=sts policy_domain={domain[0]}"]
        tlsrpt += [f"mx_host_pattern={p}" for p in patterns]
        strings = [f"{{ policy_string = {x} }}" for x in policy.lines if _line_safe(x)]
        candidates = [core + tlsrpt + strings, core + tlsrpt, core]
    for parts in candidates:
        reply = reply_ok(" ".join(parts))
        if len(reply) <= max_size:
            return reply
    return REPLY_NOTFOUND


def match_list(patterns: Sequence[str], mx_hosts: Sequence[str] | None) -> list[str]:
    """Postfix `match=` entries for patterns from `valid_mx_patterns`, in order, deduplicated.

    Without MX data (`mx_hosts` None: not looked up, or the lookup failed), `*.x` becomes `.x`
    (docs/conformance.md: PF-match-patterns: one or more labels, looser than the RFC; fail-open).
    With MX data, `*.x` becomes the MX names it matches under RFC 8461 §4.1 (exactly one label),
    sorted so DNS answer order does not change the bytes, and a wildcard matching none of them adds
    nothing: an MX host two labels deep is refused (§4.1), as the RFC wants, instead of being let in
    by `.x`. When no entry is left at all, the list is `NO_MX_MATCH`, a name no certificate can
    carry, so Postfix defers (enforce) rather than reading an empty `match=` as its default. Callers
    must pass MX names no older than their DNS TTL: a new MX under `x` is accepted only once they
    list it.
    """
    hosts = None if mx_hosts is None else _valid_hosts(mx_hosts)
    out: dict[str, None] = {}
    for pattern in patterns:
        if not pattern.startswith("*."):
            out[pattern] = None
        elif hosts is None:
            out[pattern[1:]] = None
        else:
            out.update(dict.fromkeys(sorted(h for h in hosts if mx_matches(pattern, h))))
    return list(out) or [NO_MX_MATCH]


def valid_mx_patterns(patterns: Iterable[str]) -> list[str]:
    """Patterns that satisfy the RFC 8461 mx grammar, lower-cased, deduplicated, in order.

    Anything else (spaces, `=`, braces, `:`, `_`, trailing dot, inner `*`, non-ASCII) is
    dropped: it could otherwise add a Postfix attribute or match entry (DESIGN house rule).
    """
    out: dict[str, None] = {}
    for pattern in patterns:
        name = pattern[2:] if pattern.startswith("*.") else pattern
        if _is_domain(name):
            out[pattern.lower()] = None
    return list(out)


def _valid_hosts(hosts: Iterable[str]) -> list[str]:
    """MX host names from DNS: one trailing dot stripped, lower-cased, invalid ones dropped."""
    names = (h[:-1] if h.endswith(".") else h for h in hosts)
    return [n.lower() for n in names if _is_domain(n)]


def _is_domain(name: str) -> bool:
    """The policy parser's own host-name grammar (RFC 8461 §3.2): LDH A-labels, no numeric TLD.

    That also satisfies Postfix's valid_hostname() for `policy_domain=` (docs/conformance.md:
    PF-sts-attributes).
    """
    return hostname_problem(name) is None


def _line_safe(line: str) -> bool:
    """True if `{ policy_string = line }` reaches Postfix unchanged and is a validated line.

    Braces would unbalance the group (docs/conformance.md: PF-reply-syntax); control characters are
    rewritten to spaces and surrounding whitespace is trimmed by Postfix's parser, so the string
    would change. An `mx:` line whose pattern fails the grammar is dropped like its pattern, so
    the reported policy never shows a pattern that was not enforced.
    """
    if not line or line != line.strip() or _UNSAFE_IN_BRACES_RE.search(line):
        return False
    key, _, value = line.partition(":")
    return key != "mx" or bool(valid_mx_patterns([value.strip()]))
