"""What the installed Postfix says about itself, asked through `postconf`, and the two reply
decisions that depend on it.

The daemon needs two facts it cannot configure away safely: the Postfix version (the 3.10 STS
attributes break older versions) and whether Postfix does DANE. Every answer is None when
Postfix cannot be asked, and the decisions then pick the safe default.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND

log = logging.getLogger(__name__)

DANE_REPLIES: dict[str, bytes | None] = {
    "off": None,
    "notfound": REPLY_NOTFOUND,
    "dane": b"OK dane",
    "dane-only": b"OK dane-only",
}
"""`server.dane` -> the reply for a DANE-protected enforce domain (None: DANE not checked)."""


def sts_attributes_enabled(setting: bool | str, postconf: str) -> bool:
    """Postfix 3.10's attributes break Postfix <= 3.9, so `auto` enables them only when sure."""
    if setting != "auto":
        log.info("event=sts-attributes enabled=%s source=config", setting)
        return bool(setting)
    version = postfix_version(postconf)
    enabled = version is not None and version >= (3, 10)
    shown = ".".join(map(str, version)) if version else "unknown"
    log.info("event=sts-attributes enabled=%s source=postconf postfix_version=%s", enabled, shown)
    return enabled


def dane_reply(mode: str, postconf: str) -> bytes | None:
    """With Postfix doing DANE (RFC 8461 §2: DANE wins), a DANE destination must keep Postfix's
    dane level; `auto` asks Postfix whether it does DANE with DNSSEC."""
    if mode == "auto":
        values = postfix_settings(postconf, "smtp_tls_security_level", "smtp_dns_support_level")
        level, support = values if values and len(values) == 2 else ("", "")
        postfix_dane = level.lower() in ("dane", "dane-only") and support.lower() == "dnssec"
        mode = "notfound" if postfix_dane else "off"
        log.info("event=dane mode=%s source=postconf level=%r dns_support=%r", mode, level, support)
    return DANE_REPLIES[mode]


def postfix_version(postconf: str) -> tuple[int, ...] | None:
    """The installed Postfix's version (`postconf -d -h mail_version`), or None when unknown.

    `-d` reads the compiled-in value, so it works without a main.cf and costs ~10 ms.
    """
    out = postfix_settings_default(postconf, "mail_version")
    if out is None:
        return None
    parts = out.split("-")[0].split(".")
    return tuple(int(p) for p in parts) if parts and all(p.isdigit() for p in parts) else None


def postfix_settings_default(postconf: str, name: str) -> str | None:
    """A parameter's compiled-in default (`postconf -d -h`): needs no main.cf."""
    try:
        return subprocess.run(
            [postconf, "-d", "-h", name], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def postfix_settings(postconf: str, *names: str) -> list[str] | None:
    """Values of main.cf parameters (`postconf -h`), or None when Postfix cannot be asked.

    Without a main.cf, postconf fails only after a one-second pause: look for the file first.
    """
    directory = postfix_settings_default(postconf, "config_directory")
    if directory is None or not (Path(directory) / "main.cf").exists():
        return None
    try:
        out = subprocess.run(
            [postconf, "-h", *names], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.splitlines()]
