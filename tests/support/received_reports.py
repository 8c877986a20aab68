"""TLS reports as several kinds of senders write them, wrapped as they mail them.

Written for these tests from RFC 8460 §4 and the deviations operators see in practice (dates
without `Z`, a Report-ID in angle brackets, `mx-host` as one string, failure details missing
or empty, `no-policy-found` without a policy string, IPv6 addresses). No sender's real report is
copied; organisation names are placeholders.
"""

from __future__ import annotations

import gzip
import json
from datetime import date, timedelta
from email.message import EmailMessage
from typing import Any

DOMAIN = "example.com"
TESTING = [
    "version: STSv1",
    "mode: testing",
    "mx: mx1.example.com",
    "mx: *.mx.example.com",
    "max_age: 86400",
]


def sts_policy(
    domain: str = DOMAIN, lines: list[str] | None = None, mx: Any = None
) -> dict[str, Any]:
    return {
        "policy-type": "sts",
        "policy-string": lines if lines is not None else TESTING,
        "policy-domain": domain,
        "mx-host": mx if mx is not None else ["mx1.example.com", "*.mx.example.com"],
    }


def report(
    org: str,
    day: date,
    *,
    ok: int = 100,
    failed: int = 0,
    details: list[dict[str, Any]] | None = None,
    policy: dict[str, Any] | None = None,
    report_id: str | None = None,
    zone: str = "Z",
) -> dict[str, Any]:
    """One report of `org` for the UTC day `day` (RFC 8460 §4.4 field names)."""
    entry: dict[str, Any] = {
        "policy": policy or sts_policy(),
        "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
    }
    if details is not None:
        entry["failure-details"] = details
    end = day + timedelta(days=1)
    return {
        "organization-name": org,
        "date-range": {
            "start-datetime": f"{day.isoformat()}T00:00:00{zone}",
            "end-datetime": f"{end.isoformat()}T00:00:00{zone}" if zone else f"{day}T23:59:59",
        },
        "contact-info": f"tlsrpt@{org.split()[0].lower()}.example",
        "report-id": report_id or f"{day.isoformat()}_{org.split()[0].lower()}_{DOMAIN}",
        "policies": [entry],
    }


def failure(
    result: str, mx: str = "mx1.example.com", count: int = 3, **extra: Any
) -> dict[str, Any]:
    return {
        "result-type": result,
        "sending-mta-ip": extra.pop("sending", "2001:db8::25"),
        "receiving-mx-hostname": mx,
        "receiving-ip": extra.pop("receiving", "192.0.2.10"),
        "failed-session-count": count,
        **extra,
    }


def as_mail(doc: dict[str, Any], *, attachment: str = "gzip", sender: str = "Org") -> bytes:
    """The report mailed as RFC 8460 §5.3 says (`gzip`), or as some senders label it
    (`octet`: application/octet-stream with a .json.gz name; `json`: plain JSON)."""
    body = json.dumps(doc).encode()
    message = EmailMessage()
    message["From"] = f"{sender} <noreply-tlsrpt@sender.example>"
    message["To"] = "tlsrpt@example.com"
    message["Subject"] = f"Report Domain: {DOMAIN} Submitter: sender.example Report-ID: <x>"
    message["Message-ID"] = "<report-1@sender.example>"
    message.set_content("This is an aggregate TLS report.")
    name = f"sender.example!{DOMAIN}!1!2!x.json"
    if attachment == "gzip":
        message.add_attachment(
            gzip.compress(body),
            maintype="application",
            subtype="tlsrpt+gzip",
            filename=name + ".gz",
        )
    elif attachment == "octet":
        message.add_attachment(
            gzip.compress(body),
            maintype="application",
            subtype="octet-stream",
            filename=name + ".gz",
        )
    else:
        message.add_attachment(body, maintype="application", subtype="tlsrpt+json", filename=name)
    return message.as_bytes()
