"""The names an own-domain run is given (`check`, `monitor`), sorted into the domains to check
and the rest.

One rule for both: a name is checked when `domain_for_name` reads it as a domain (as its
A-label, each once, in the order given); any other name is not checked, and is named at the
end of the run and counts as UNKNOWN (`render.overall`), so one typo does not stop the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from mta_sts_policyd.sts.keys import domain_for_name


def sort_names(names: Sequence[str], where: Sequence[str] = ()) -> tuple[dict[str, int], list[str]]:
    """({A-label domain: the index of the first name that gave it}, why each name that is
    not a domain is not one). `where`, when given, has one entry per name (a file and line,
    `"domains.txt line 3: "`) put before its reason; blanks around a name are not part of it."""
    domains: dict[str, int] = {}
    not_domains: list[str] = []
    for i, name in enumerate(names):
        domain = domain_for_name(name.strip())
        if domain is None:
            prefix = where[i] if where else ""
            not_domains.append(f"{prefix}{name!r} is not a domain name")
        else:
            domains.setdefault(domain, i)
    return domains, not_domains
