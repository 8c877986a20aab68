"""Host names: the project's one A-label converter and the host-name checks built on it.

Everything works on A-labels: MTA-STS compares names in A-label form (RFC 8461 §3.2, §4.1) and
TLS-RPT reports them so (RFC 8460 §4.4), so U-labels are converted once, at the edge, with
IDNA 2008 + UTS 46 mapping (the `idna` package). Pure: no I/O.
"""

from __future__ import annotations

import re

import idna

from mta_sts_policyd.errors import InvalidName

MAX_NAME_LENGTH = 253
"""Longest textual host name without the trailing dot (RFC 1035 §2.3.4: 255 octets on the wire)."""

_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
"""One label of a host name met on the network (`_` tolerated, as Postfix and resolvers do)."""


def hostname_problem(name: str) -> str | None:
    """Why `name` is not an RFC 5321 LDH host name (A-labels only), or None when it is one.

    A numeric last label is refused: no top-level domain is numeric, so such a name is an IP
    address (or a fragment of one), never a host that can hold a Web-PKI certificate.
    """
    if not name:
        return "the host name is empty"
    if not name.isascii():
        return "non-ASCII characters are not allowed (write IDNs as A-labels, xn--...)"
    if name.endswith("."):
        return "a trailing '.' is not allowed"
    if "_" in name:
        return "'_' is not allowed in host names"
    if "*" in name:
        return "'*' is only allowed as the whole first label, written '*.'"
    if "[" in name or ":" in name:
        return "address literals are not allowed"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is longer than {MAX_NAME_LENGTH} characters"
    labels = name.split(".")
    for label in labels:
        if not _LDH_LABEL.fullmatch(label):
            return (
                f"label {show(label)} is not 1-63 letters, digits or hyphens"
                " that starts and ends with a letter or digit"
            )
    if _DIGITS.fullmatch(labels[-1]):
        return "IP addresses are not allowed (the last label is numeric)"
    return None


def to_a_label(name: str) -> str:
    """The lower-case A-label form of `name`: the one converter of the project.

    Discovery, the probe, TLS-RPT and the tools all call this, so a name has one A-label form
    everywhere: the policy looked up, the MX probed and the `_smtp._tls` record a report goes
    to belong to the same domain. IDNA 2008 after UTS 46 mapping (non-transitional), as
    RFC 8461 §3.2/§4.1 compare A-labels and browsers resolve IDNs; never Python's IDNA 2003
    codec, which maps `ß` to `ss` and so names a different domain (`straße.de` is
    `xn--strae-oqa.de`, `strasse.de` belongs to someone else).

    Only non-ASCII labels go through IDNA 2008: running ASCII labels through it would refuse
    real-world DNS names such as `r3---sn-x` (`--` in positions 3-4) or `_smtp._tls`. Nothing is
    stripped: whether a trailing dot or `*.` is allowed is the caller's rule (UTS 46 may map an
    ideographic full stop to a trailing `.`). Raises InvalidName (a ValueError) with the reason.
    """
    if name.isascii():
        return name.lower()
    try:
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
        labels = [
            label if label.isascii() else idna.alabel(label).decode("ascii")
            for label in mapped.split(".")
        ]
    except (UnicodeError, ValueError) as exc:
        # idna.IDNAError is a UnicodeError; surrogates and odd input raise its relatives.
        raise InvalidName(f"{show(name)} has no IDNA 2008 A-label form: {exc}") from None
    return ".".join(labels).lower()


def host_name(name: str) -> str:
    """A host name as the network sees it: one trailing dot removed, A-label, lower case.

    For names that come from DNS or a peer (MX hosts, TLS-RPT names), so more tolerant than
    `hostname_problem`: `_` is allowed in labels, as Postfix and resolvers allow it. Raises
    InvalidName naming what is wrong.
    """
    text = name[:-1] if name.endswith(".") else name
    host = to_a_label(text)
    if not host:
        raise InvalidName("the host name is empty")
    if len(host) > MAX_NAME_LENGTH:
        raise InvalidName(f"{show(name)} is longer than {MAX_NAME_LENGTH} characters")
    for label in host.split("."):
        if not _HOST_LABEL.fullmatch(label):
            raise InvalidName(
                f"{show(name)}: label {show(label)} is not 1-63 letters, digits, '-' or '_'"
                " that starts and ends with a letter, digit or '_'"
            )
    return host


def show(text: str, limit: int = 40) -> str:
    """A short, quoted rendition of untrusted text for error messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
