"""What the installed Postfix says about itself, asked through `postconf`.

The daemon needs two facts it cannot configure away safely: the Postfix version (the 3.10 STS
attributes break older versions) and whether Postfix does DANE. Every answer is None when
Postfix cannot be asked, and the caller picks the safe default.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


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
