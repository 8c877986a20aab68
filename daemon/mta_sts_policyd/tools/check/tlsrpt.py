"""Finding rules for the `_smtp._tls` TLS-RPT record (RFC 8460 §3). Pure; the record grammar
is tlsrpt/record.py's, the one the daemon uses to find where to send its own reports."""

from __future__ import annotations

from mta_sts_policyd.sts.model import Mode, Policy
from mta_sts_policyd.tlsrpt.record import RecordSyntaxError, parse_tlsrpt_record
from mta_sts_policyd.tools.check.findings import Finding, Severity, finding
from mta_sts_policyd.tools.check.observations import TlsRptSeen


def judge_tlsrpt(seen: TlsRptSeen, policy: Policy | None) -> list[Finding]:
    name = seen.name
    if seen.error is not None:
        return [finding("DNS_LOOKUP_FAILED", f"TXT {name}: {seen.error}", name=name)]
    if not seen.records:
        blind = policy is None or policy.mode is Mode.TESTING
        severity = Severity.WARNING if blind else Severity.INFO
        why = "nobody will tell you what fails" if blind else "no reports will reach you"
        return [
            finding(
                "TLSRPT_MISSING",
                f"no v=TLSRPTv1 record at {name}: {why}",
                severity=severity,
                name=name,
            )
        ]
    if len(seen.records) > 1:
        return [
            finding(
                "TLSRPT_MULTIPLE",
                f"{len(seen.records)} v=TLSRPTv1 records at {name}",
                name=name,
                seen=" | ".join(seen.records),
            )
        ]
    try:
        record = parse_tlsrpt_record(seen.records[0])
    except RecordSyntaxError as exc:
        return [finding("TLSRPT_INVALID", str(exc), name=name, seen=seen.records[0])]
    out = [
        finding(
            "TLSRPT_RUA_UNSUPPORTED",
            f"rua {uri} is not a usable mailto: or https: URI",
            name=name,
            uri=uri,
        )
        for uri in record.unsupported
    ]
    for domain, problem in sorted(seen.mailto_domains.items()):
        if problem is not None:
            out.append(
                finding(
                    "TLSRPT_MAILTO_NO_MX",
                    f"reports to {domain}: {problem}",
                    name=name,
                    uri=f"mailto:...@{domain}",
                )
            )
    for uri, problems in sorted(seen.https.items()):
        for p in problems:
            code = "ADDRESS_NOT_PUBLIC" if p.not_public else "TLSRPT_HTTPS_FAILED"
            at = f" at {p.address}" if p.address else ""
            out.append(
                finding(code, f"{uri}{at}: {p.problem}", name=name, uri=uri, address=p.address)
            )
    return out
