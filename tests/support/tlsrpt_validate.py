"""Validators for generated TLS reports: strict JSON Schema, parsedmarc, fixtures.

parsedmarc pulls in a large dependency tree, so it may live in its own virtualenv: set
PARSEDMARC_PYTHON to that interpreter; otherwise the current interpreter is tried.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.tlsrpt.model import FailureDetail, PolicyRef, PolicyType, SessionEvent

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "tlsrpt-report.schema.json"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{|}]+$")

_checker = jsonschema.FormatChecker()


@_checker.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or _URI.match(value) is not None


@_checker.checks("ipv6", raises=ValueError)
def _is_rfc5952(value: object) -> bool:
    """RFC 8460 §4.4: IPv6 in RFC 5952 canonical text."""
    if not isinstance(value, str):
        return True
    return ipaddress.IPv6Address(value).compressed == value


_validator = jsonschema.Draft202012Validator(
    json.loads(SCHEMA_PATH.read_text()), format_checker=_checker
)


def validate_report(report: dict[str, Any] | bytes) -> None:
    """Raise jsonschema.ValidationError unless the report passes the strict schema."""
    obj = json.loads(report) if isinstance(report, bytes) else report
    _validator.validate(obj)


_RUNNER = r"""
import base64, json, sys
import parsedmarc
out = []
for kind, payload in json.load(sys.stdin):
    data = base64.b64decode(payload)
    try:
        if kind == "json":
            r = parsedmarc.parse_smtp_tls_report_json(data.decode())
            out.append({"ok": True, "report": json.loads(json.dumps(r, default=str))})
        else:
            r = parsedmarc.parse_report_email(data, offline=True)
            out.append({"ok": True, "type": r["report_type"],
                        "report": json.loads(json.dumps(r["report"], default=str))})
    except Exception as exc:
        out.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
json.dump(out, sys.stdout)
"""


PARSEDMARC_VENV = Path(__file__).resolve().parents[2] / ".venv-parsedmarc" / "bin" / "python"


def _parsedmarc_python() -> str:
    """parsedmarc lives in its own venv (.ci/setup makes it); CI must never skip it."""
    default = str(PARSEDMARC_VENV) if PARSEDMARC_VENV.exists() else sys.executable
    candidate = os.environ.get("PARSEDMARC_PYTHON", default)
    probe = subprocess.run([candidate, "-c", "import parsedmarc"], capture_output=True)
    if probe.returncode != 0:
        message = "parsedmarc not installed (run .ci/setup, or set PARSEDMARC_PYTHON)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return candidate


def parsedmarc_parse(items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """items: ("json", report bytes) or ("email", message bytes); one result dict per item."""
    payload = json.dumps([(k, base64.b64encode(v).decode()) for k, v in items])
    proc = subprocess.run(
        [_parsedmarc_python(), "-c", _RUNNER],
        input=payload.encode(),
        capture_output=True,
        timeout=120,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


DAY_TS = 1795219200  # 2026-11-21T00:00:00Z
RECORD = "v=TLSRPTv1;rua=mailto:tlsrpt@company-y.example,https://reports.company-y.example/tlsrpt"
STS = PolicyRef(
    PolicyType.STS,
    "company-y.example",
    ("version: STSv1", "mode: enforce", "mx: *.mail.company-y.example", "max_age: 86400"),
    ("*.mail.company-y.example",),
)
TLSA = PolicyRef(
    PolicyType.TLSA,
    "hand.example",
    ("3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6",),
)


def fixed_events() -> list[SessionEvent]:
    """The fixture datagrams as events: STS success+failures, no-policy-found, TLSA, IDN."""
    expired = FailureDetail(
        ResultType.CERTIFICATE_EXPIRED,
        "192.0.2.10",
        "mx1.mail.company-y.example",
        "mx1.mail.company-y.example",
        "198.51.100.1",
        None,
        "certificate has expired",
    )
    nostarttls = FailureDetail(
        ResultType.STARTTLS_NOT_SUPPORTED,
        "192.0.2.10",
        "mx2.mail.company-y.example",
        None,
        "198.51.100.2",
        'quote" back\\slash tab\t nl\n',
        "",
    )
    return [
        SessionEvent(DAY_TS + 10, "company-y.example", STS, True, tlsrpt_record=RECORD, count=2),
        SessionEvent(
            DAY_TS + 20,
            "company-y.example",
            STS,
            False,
            (expired, nostarttls),
            tlsrpt_record=RECORD,
            count=3,
        ),
        SessionEvent(
            DAY_TS + 30,
            "Other.Example.",
            PolicyRef(PolicyType.NO_POLICY_FOUND, ""),
            True,
            tlsrpt_record="v=TLSRPTv1; rua=mailto:tls@other.example",
        ),
        SessionEvent(
            DAY_TS + 40,
            "hand.example",
            TLSA,
            False,
            (
                FailureDetail(
                    ResultType.DNSSEC_INVALID,
                    "192.0.2.10",
                    "mx.hand.example",
                    None,
                    "203.0.113.5",
                    "DNSSEC bogus",
                ),
            ),
            tlsrpt_record="v=TLSRPTv1;rua=mailto:tlsrpt@hand.example",
        ),
        SessionEvent(
            DAY_TS + 50,
            "bücher.example",
            PolicyRef(
                PolicyType.STS,
                "bücher.example",
                ("version: STSv1", "mode: testing", "mx: mx.bücher.example", "max_age: 600"),
                ("mx.bücher.example",),
            ),
            False,
            (
                FailureDetail(
                    ResultType.VALIDATION_FAILURE,
                    "2001:db8:0:0::1",
                    "mx.bücher.example",
                    None,
                    "2001:DB8::25",
                ),
            ),
            tlsrpt_record="v=TLSRPTv1; rua=mailto:rpt@xn--bcher-kva.example",
        ),
    ]
