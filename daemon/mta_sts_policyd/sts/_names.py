"""DNS host-name checks shared by the policy parser, key normaliser and MX matcher.

Everything here works on A-labels: MTA-STS compares names in A-label form (RFC 8461 §3.2, §4.1),
so U-labels are converted once, at the edge, with IDNA 2008 + UTS 46 mapping (the `idna` package).
"""

from __future__ import annotations

import re

import idna

MAX_NAME_LENGTH = 253
"""Longest textual host name without the trailing dot (RFC 1035 §2.3.4: 255 octets on the wire)."""

_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


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


def to_a_label(name: str) -> str | None:
    """Lower-case A-label form of `name`, or None when it cannot be converted.

    Only non-ASCII labels go through IDNA 2008 (after UTS 46 mapping): running ASCII labels
    through it would refuse real-world DNS names such as `r3---sn-x` (`--` in positions 3-4).
    """
    if name.isascii():
        return name.lower()
    try:
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
        labels = [
            label if label.isascii() else idna.alabel(label).decode("ascii")
            for label in mapped.split(".")
        ]
    except (UnicodeError, ValueError):
        # idna.IDNAError is a UnicodeError; surrogates and odd input raise its relatives.
        return None
    return ".".join(labels).lower()


def show(text: str, limit: int = 40) -> str:
    """A short, quoted rendition of untrusted text for error messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
