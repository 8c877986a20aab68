"""The policies the host serves: `ROOT/DOMAIN/.well-known/mta-sts.txt`, as `generate --write`
writes them, byte for byte.

Every file passes the project's own policy parser before it is served; a file that does not
(or cannot be read) is refused with a log line naming the file and the line, and the last good
version of that domain keeps being served. A domain whose file is removed stops being served,
with a warning (senders that still see its TXT record get 404). What is refused, and which
domains stopped being served, stay known, so `host status` reports them instead of leaving
them out.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from mta_sts_policyd.discovery.http_rules import size_problem
from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.sts.keys import domain_for_name
from mta_sts_policyd.sts.policy import parse_policy

log = logging.getLogger(__name__)

POLICY_FILE = Path(".well-known") / "mta-sts.txt"


def folder_problem(root: Path) -> str | None:
    """Why policies cannot be read from `root`, or None (the host, `host status` and
    `check-config` say it alike)."""
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not stat.S_ISDIR(mode):
        return "is not a folder"
    if not os.access(root, os.R_OK | os.X_OK):
        return "cannot be read by this user"
    return None


@dataclass(frozen=True, slots=True)
class Served:
    body: bytes
    mtime_ns: int


class PolicyDocuments:
    """Domain (A-label) -> policy bytes, re-read by `reload()` (SIGHUP and change polling)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._served: dict[str, Served] = {}
        self._refused: dict[str, tuple[int | None, str]] = {}
        """Domain -> mtime and reason of the file refused last: said once, read again when it
        changes; forgotten when the file goes."""
        self._gone: set[str] = set()
        """Domains served earlier whose file has since gone."""
        self._folder_problem: str | None = None
        self._skipped: set[str] = set()
        """Folders that name no domain, said once (again on SIGHUP), not at every poll."""

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

    @property
    def refusals(self) -> dict[str, str]:
        """Domain -> why its present file is refused (the last good version may be served)."""
        return {domain: reason for domain, (_, reason) in self._refused.items()}

    @property
    def gone(self) -> list[str]:
        """Domains this process served whose file has since been removed."""
        return sorted(self._gone)

    def policy_file(self, domain: str) -> Path:
        return self.root / domain / POLICY_FILE

    def reload(self, force: bool = False) -> bool:
        """Re-read changed files (all of them with `force`: SIGHUP, for a file rewritten within
        one mtime tick); True when what is served changed."""
        self._check_folder()
        seen: dict[str, Served] = {}
        refused: dict[str, tuple[int | None, str]] = {}
        skipped: set[str] = set()
        for path in sorted(self.root.glob(f"*/{POLICY_FILE}")):
            domain = self._domain(path, skipped, force)
            if domain is None:
                continue
            current = self._served.get(domain)
            mtime = None
            try:
                mtime = path.stat().st_mtime_ns
                if not force and current is not None and current.mtime_ns == mtime:
                    seen[domain] = current
                    continue
                earlier = self._refused.get(domain)
                if not force and earlier is not None and earlier[0] == mtime:
                    refused[domain] = earlier
                    if current is not None:
                        seen[domain] = current
                    continue
                seen[domain] = Served(self._read_valid(path), mtime)
            except (OSError, PolicySyntaxError) as exc:
                reason = str(exc) if isinstance(exc, PolicySyntaxError) else exc.strerror
                refused[domain] = (mtime, reason or str(exc))
                self._say_refused(path, exc, current is not None)
                if current is not None:
                    seen[domain] = current
        self._note_gone(seen)
        changed = _bodies(seen) != _bodies(self._served)
        self._served, self._refused, self._skipped = seen, refused, skipped
        if changed:
            log.info("event=policies-loaded domains=%d", len(seen))
        return changed

    def _check_folder(self) -> None:
        """A policy folder that does not exist (a typo, or nothing written yet) is said once:
        the host keeps looking and serves what appears there."""
        problem = folder_problem(self.root)
        if problem is not None and problem != self._folder_problem:
            log.warning(
                "event=policy-dir-unusable policy_dir=%s reason=%r served=none"
                " hint='publish and generate --write create it'",
                self.root,
                problem,
            )
        self._folder_problem = problem

    def _note_gone(self, seen: dict[str, Served]) -> None:
        """A served domain whose file went is a warning: senders that still see its TXT
        record now get 404 (`host status` reports it while a record or acme_names name it)."""
        for domain in sorted(set(self._served) - set(seen)):
            log.warning(
                "event=policy-file-removed domain=%s file=%s served=none",
                domain,
                self.policy_file(domain),
            )
        self._gone = (self._gone | set(self._served)) - set(seen)

    @staticmethod
    def _say_refused(path: Path, exc: OSError | PolicySyntaxError, kept: bool) -> None:
        where = f" line={exc.line}" if isinstance(exc, PolicySyntaxError) and exc.line else ""
        log.warning(
            "event=policy-file-refused file=%s%s reason=%r kept=%s",
            path,
            where,
            exc.reason if isinstance(exc, PolicySyntaxError) else str(exc),
            "last-good" if kept else "none",
        )

    def _domain(self, path: Path, skipped: set[str], force: bool) -> str | None:
        """The domain a folder names, by the rule of every own-domain command; a folder that
        names none (`not a domain`, `a..b`) is skipped (into `skipped`) with a warning, not
        served."""
        folder = path.parent.parent.name
        domain = domain_for_name(folder.rstrip("."))
        if domain is None:
            skipped.add(folder)
            if force or folder not in self._skipped:
                reason = f"folder {folder!r} is not a domain name"
                log.warning("event=policy-file-refused file=%r reason=%r", str(path), reason)
        return domain

    @staticmethod
    def _read_valid(path: Path) -> bytes:
        body = path.read_bytes()
        too_large = size_problem(len(body))  # generate and publish refuse by the same rule
        if too_large is not None:
            raise PolicySyntaxError(f"the file is {too_large}")
        parse_policy(body)
        return body


def _bodies(served: dict[str, Served]) -> dict[str, bytes]:
    return {domain: s.body for domain, s in served.items()}
