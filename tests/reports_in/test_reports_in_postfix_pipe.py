"""A report mailed to the `rua` address ends up in the store through a real Postfix pipe(8)."""

from __future__ import annotations

import os
import pwd
import smtplib
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

import mta_sts_policyd
from mta_sts_policyd.reports_in.store import ReportsInStore
from mta_sts_policyd.state_files import REPORTS_IN_STORE_NAME
from support.postfix_instance import LOOPBACK, PostfixInstance, postfix_available
from support.received_reports import as_mail, report

pytestmark = pytest.mark.slow

PIPE = (
    "tlsrpt-in unix  -       n       n       -       2       pipe\n"
    "  flags=Rq user=nobody argv=/usr/bin/env PYTHONPATH={path} {python} -m mta_sts_policyd\n"
    "  reports-in --state-dir {state} --domain example.com\n"
)


def expose_interpreter(scratch: Path) -> str:
    """Shell commands that let pipe(8)'s unprivileged user run this interpreter.

    The interpreter may live under a directory only root may enter (e.g. a pyenv build in
    /root). Inside Postfix's own mount namespace that directory is replaced by an open tmpfs
    holding just the interpreter's tree; the real file system is not changed.
    """
    prefix = Path(sys.base_prefix).resolve()
    closed = next(
        (d for d in [*reversed(prefix.parents), prefix] if not os.stat(d).st_mode & 0o001), None
    )
    if closed is None:
        return ""
    inner = prefix.relative_to(closed)
    return (
        f'mount --bind "{prefix}" "{scratch}" && '
        f'mount -t tmpfs -o mode=0755 tmpfs "{closed}" && '
        f'mkdir -p "{closed / inner}" && mount --bind "{scratch}" "{closed / inner}"'
    )


def test_postfix_pipe_delivers_a_report_into_the_store() -> None:
    if not postfix_available():
        pytest.skip("needs root and Debian's postfix")
    state = Path(tempfile.mkdtemp(prefix="reports-in-state-"))
    nobody = pwd.getpwnam("nobody")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    package_root = Path(mta_sts_policyd.__file__).resolve().parent.parent
    instance = PostfixInstance(Path(tempfile.mkdtemp(prefix="pf-reports-in-")))
    instance.master_extra = PIPE.format(path=package_root, python=sys.executable, state=state)
    instance.namespace_setup = expose_interpreter(Path(tempfile.mkdtemp(prefix="pyexpose-")))
    table = instance.write_table("transport", {"example.com": "tlsrpt-in:"})
    instance.configure(
        {
            "relay_domains": "example.com",
            "transport_maps": table,
            "tlsrpt-in_destination_recipient_limit": "1",
        }
    )
    day = datetime.now(UTC).date() - timedelta(days=1)
    raw = as_mail(report("Piped Org", day, ok=7, failed=1))
    with instance:
        with smtplib.SMTP(LOOPBACK, instance.smtpd_port, timeout=10) as client:
            client.sendmail("reports@sender.example", ["tlsrpt@example.com"], raw)
        instance.wait_for_log(r"status=sent \(delivered via tlsrpt-in service", timeout=60)
    deadline = time.monotonic() + 10
    while not (state / REPORTS_IN_STORE_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    (stored,) = ReportsInStore(state / REPORTS_IN_STORE_NAME).policy_days("example.com", date.min)
    assert (stored.organization, stored.day, stored.successes, stored.failures) == (
        "Piped Org",
        day,
        7,
        1,
    )
