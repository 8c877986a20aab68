"""Finding rules for the `_mta-sts` TXT record and the hosting checks (RFC 8461 §3.1). Pure."""

from __future__ import annotations

from mta_sts_policyd.sts.model import TxtAbsent, TxtInvalid, TxtRecord
from mta_sts_policyd.sts.txt import is_candidate
from mta_sts_policyd.tools.check.findings import Finding, finding
from mta_sts_policyd.tools.check.observations import DomainSeen, Options, TxtSeen

TTL_HIGH = 86_400


def judge_txt(txt: TxtSeen, options: Options) -> list[Finding]:
    if txt.error is not None or txt.result is None:
        reason = txt.error or "no answer"
        return [finding("DNS_LOOKUP_FAILED", f"TXT {txt.name}: {reason}", name=txt.name)]
    out = _record(txt)
    extra = [r for r in txt.records if not is_candidate(r.encode("utf-8", "replace"))]
    if extra:
        out.append(
            finding(
                "TXT_EXTRA_RECORDS",
                f"{len(extra)} other TXT record(s) at {txt.name}",
                name=txt.name,
                seen=" | ".join(extra),
            )
        )
    if txt.chain:
        path = " -> ".join([txt.chain[0][0], *(target for _, target in txt.chain)])
        out.append(
            finding("TXT_CNAME", f"{txt.name} is an alias: {path}", name=txt.name, chain=path)
        )
    if txt.records and txt.ttl > TTL_HIGH:
        out.append(
            finding("TXT_TTL_HIGH", f"TTL {txt.ttl} s at {txt.name}", name=txt.name, ttl=txt.ttl)
        )
    record = txt.result
    expected = options.expect_id
    if expected is not None and isinstance(record, TxtRecord) and record.id != expected:
        out.append(
            finding(
                "ID_UNEXPECTED",
                f"id {record.id} is not the expected {expected}",
                name=txt.name,
                seen=record.id,
                expected=expected,
            )
        )
    return out


def _record(txt: TxtSeen) -> list[Finding]:
    record = txt.result
    seen = " | ".join(txt.records) or None
    if isinstance(record, TxtAbsent):
        return [finding("TXT_MISSING", f"{txt.name}: {record.reason}", name=txt.name, seen=seen)]
    if isinstance(record, TxtInvalid):
        candidates = sum(is_candidate(r.encode("utf-8", "replace")) for r in txt.records)
        code = "TXT_MULTIPLE" if candidates > 1 else "TXT_INVALID"
        return [finding(code, f"{txt.name}: {record.reason}", name=txt.name, seen=seen)]
    assert isinstance(record, TxtRecord)
    if not record.extensions:
        return []
    shown = "; ".join(f"{k}={v}" for k, v in record.extensions)
    return [finding("TXT_EXTENSION", f"extension fields {shown}", name=txt.name, seen=shown)]


def judge_hosting(seen: DomainSeen, options: Options) -> list[Finding]:
    """`--expect-cname HOST`: HOST must be a CNAME target on the way from mta-sts.DOMAIN or
    _mta-sts.DOMAIN (delegated hosting points one or both names at the provider)."""
    targets = {t.rstrip(".").lower() for t in seen.cname_targets}
    out = []
    for expected in options.expect_cname:
        if expected.rstrip(".").lower() not in targets:
            shown = ", ".join(sorted(targets)) or "none"
            out.append(
                finding(
                    "HOSTING_CNAME_MISSING",
                    f"neither mta-sts.{seen.domain} nor "
                    f"_mta-sts.{seen.domain} is a CNAME to {expected} (targets: "
                    f"{shown})",
                    name=expected,
                    seen=shown,
                )
            )
    return out
