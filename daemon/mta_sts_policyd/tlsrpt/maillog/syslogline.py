"""The syslog envelope of a mail-log line: time, host, program, pid, message. Pure.

Understood forms (docs/conformance.md: PF-maillog-envelope; what syslogd, rsyslog, journald and
postlogd write):
- RFC 3164 / BSD: `Mon DD HH:MM:SS[.ffffff] HOST PROG[PID]: MSG` (optional `<PRI>` in front).
  It has no year and no zone: the caller passes the zone the log was written in and "now"; the
  year is now's year, or the previous one when that would put the line more than a week ahead
  of now (a log read just after New Year).
- ISO 8601 / RFC 3339 (rsyslog `RSYSLOG_FileFormat`, `journalctl -o short-iso[-precise]`):
  `YYYY-MM-DDTHH:MM:SS[.f][Z|+HH:MM|+HHMM] HOST PROG[PID]: MSG`; without offset: caller's zone.
- RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_PRI = r"(?:<\d{1,3}>)?"
_TAG = r"(?P<prog>[^\s\[\]:]+)(?:\[(?P<pid>\d{1,10})\])?: ?(?P<msg>.*)"
_BSD = re.compile(
    _PRI + r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<time>\d\d:\d\d:\d\d(?:\.\d{1,9})?)"
    r" (?P<host>\S+) " + _TAG,
    re.DOTALL,
)
_ISO = re.compile(_PRI + r"(?P<ts>\d{4}-\d\d-\d\dT\S+) (?P<host>\S+) " + _TAG, re.DOTALL)
_RFC5424 = re.compile(
    r"<\d{1,3}>1 (?P<ts>\S+) (?P<host>\S+) (?P<prog>\S+) (?P<pid>\S+) \S+ "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+) ?(?P<msg>.*)",
    re.DOTALL,
)
_ISO_TS = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)?", re.IGNORECASE
)
_AHEAD = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class LogLine:
    """One syslog message with its envelope decoded."""

    timestamp: float
    host: str
    program: str
    pid: int | None
    message: str


def parse_syslog(line: str, *, now: float, tz: dt.tzinfo) -> LogLine | None:
    """Decode the envelope of one line; None when it is in no form we know (never raises)."""
    line = line.rstrip("\r\n")
    try:
        if line.startswith("<") and (m := _RFC5424.fullmatch(line)):
            return _from_5424(m, tz)
        if m := _ISO.fullmatch(line):
            ts = iso_time(m["ts"], tz)
            return None if ts is None else _line(ts, m)
        if m := _BSD.fullmatch(line):
            ts = _bsd_time(m, now, tz)
            return None if ts is None else _line(ts, m)
    except (ValueError, OverflowError):
        return None
    return None


def iso_time(text: str, tz: dt.tzinfo) -> float | None:
    """Unix time of an RFC 3339 / ISO 8601 timestamp; a missing offset means `tz`."""
    m = _ISO_TS.fullmatch(text)
    if m is None:
        return None
    base, frac, zone = m.groups()
    when = dt.datetime.fromisoformat(base)
    if zone is None:
        when = when.replace(tzinfo=tz)
    elif zone.upper() == "Z":
        when = when.replace(tzinfo=dt.UTC)
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        when = when.replace(tzinfo=dt.timezone(sign * offset))
    return when.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)


def _bsd_time(m: re.Match[str], now: float, tz: dt.tzinfo) -> float | None:
    month = _MONTHS.get(m["mon"])
    if month is None:
        return None
    hms, _, frac = m["time"].partition(".")
    hour, minute, second = (int(x) for x in hms.split(":"))
    year = dt.datetime.fromtimestamp(now, tz).year
    for candidate in (year, year - 1):
        try:
            when = dt.datetime(candidate, month, int(m["day"]), hour, minute, second, tzinfo=tz)
        except ValueError:
            continue  # 29 Feb in a non-leap year, or an impossible date
        ts = when.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)
        if ts <= now + _AHEAD:
            return ts
    return None


def _from_5424(m: re.Match[str], tz: dt.tzinfo) -> LogLine | None:
    ts = iso_time(m["ts"], tz)
    if ts is None:
        return None
    pid = int(m["pid"]) if m["pid"].isdigit() and len(m["pid"]) <= 10 else None
    return LogLine(ts, m["host"], m["prog"], pid, m["msg"].removeprefix("\ufeff"))


def _line(ts: float, m: re.Match[str]) -> LogLine:
    pid = int(m["pid"]) if m["pid"] else None
    return LogLine(ts, m["host"], m["prog"], pid, m["msg"])
