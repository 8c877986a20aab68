"""The policies the host serves: `ROOT/DOMAIN/.well-known/mta-sts.txt`, as `generate --write`
writes them, byte for byte.

Every file passes the project's own policy parser before it is served; a file that does not
(or cannot be read) is refused with a log line naming the file and the line, and the last good
version of that domain keeps being served. A domain whose file is removed stops being served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.sts.keys import domain_for_name
from mta_sts_policyd.sts.policy import parse_policy

log = logging.getLogger(__name__)

POLICY_FILE = Path(".well-known") / "mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024
"""RFC 8461 §3.3 lets senders stop at 64 KiB: a larger file would never be applied."""


@dataclass(frozen=True, slots=True)
class Served:
    body: bytes
    mtime_ns: int


class PolicyDocuments:
    """Domain (A-label) -> policy bytes, re-read by `reload()` (SIGHUP and change polling)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._served: dict[str, Served] = {}
        self._refused: dict[str, int] = {}
        """Domain -> mtime of the file refused last: said once, read again when it changes."""

    def get(self, host: str) -> bytes | None:
        """The policy for a request to `host` (`mta-sts.DOMAIN`), or None."""
        name = host.lower().rstrip(".")
        if not name.startswith("mta-sts."):
            return None
        served = self._served.get(name[len("mta-sts.") :])
        return served.body if served else None

    @property
    def domains(self) -> list[str]:
        return sorted(self._served)

    def reload(self, force: bool = False) -> bool:
        """Re-read changed files (all of them with `force`: SIGHUP, for a file rewritten within
        one mtime tick); True when what is served changed."""
        seen: dict[str, Served] = {}
        for path in sorted(self.root.glob(f"*/{POLICY_FILE}")):
            domain = self._domain(path)
            if domain is None:
                continue
            current = self._served.get(domain)
            mtime = None
            try:
                mtime = path.stat().st_mtime_ns
                if not force and current is not None and current.mtime_ns == mtime:
                    seen[domain] = current
                    continue
                if not force and self._refused.get(domain) == mtime:
                    if current is not None:
                        seen[domain] = current
                    continue
                seen[domain] = Served(self._read_valid(path), mtime)
                self._refused.pop(domain, None)
            except (OSError, PolicySyntaxError) as exc:
                if mtime is not None:
                    self._refused[domain] = mtime
                where = f" line={exc.line}" if isinstance(exc, PolicySyntaxError) else ""
                reason = exc.reason if isinstance(exc, PolicySyntaxError) else str(exc)
                log.warning(
                    "event=policy-file-refused file=%s%s reason=%r kept=%s",
                    path,
                    where,
                    reason,
                    "last-good" if current else "none",
                )
                if current is not None:
                    seen[domain] = current
        changed = _bodies(seen) != _bodies(self._served)
        self._served = seen
        if changed:
            log.info("event=policies-loaded domains=%d", len(seen))
        return changed

    def _domain(self, path: Path) -> str | None:
        """The domain a folder names, by the rule of every own-domain command; a folder that
        names none (`not a domain`, `a..b`) is skipped with a warning, not served."""
        folder = path.parent.parent.name
        domain = domain_for_name(folder.rstrip("."))
        if domain is None:
            reason = f"folder {folder!r} is not a domain name"
            log.warning("event=policy-file-refused file=%r reason=%r", str(path), reason)
        return domain

    @staticmethod
    def _read_valid(path: Path) -> bytes:
        body = path.read_bytes()
        if len(body) > MAX_POLICY_BYTES:
            raise PolicySyntaxError(f"larger than {MAX_POLICY_BYTES} bytes (RFC 8461 §3.3)")
        parse_policy(body)
        return body


def _bodies(served: dict[str, Served]) -> dict[str, bytes]:
    return {domain: s.body for domain, s in served.items()}
