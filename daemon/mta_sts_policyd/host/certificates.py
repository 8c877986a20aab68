"""Certificates of the policy host, one per name, chosen by SNI; never replaced by a worse one.

Files in certbot's layout, `DIR/NAME/fullchain.pem` + `DIR/NAME/privkey.pem` (certbot's
`/etc/letsencrypt/live`, or the state directory where the built-in ACME client writes), are
re-read when they change. A new file is used only if it loads (key matches), covers NAME by
RFC 6125 rules, is valid now, and does not expire before the one in use (an older file put
back, say); otherwise a log line says why and the certificate in use stays (a restart takes
the file as it is). An unknown name gets no certificate at all (see `server.py`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mta_sts_policyd.probe.cert_names import matches_host
from mta_sts_policyd.probe.tls import inspect_certificate

log = logging.getLogger(__name__)

CHAIN_FILE, KEY_FILE = "fullchain.pem", "privkey.pem"
UNREADABLE = (-1, -1)
"""The stamp of a refusal for a file that could not even be stat()ed."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a name's file is not used: said once, tried again when its stamp changes."""

    stamp: tuple[int, int]
    file: Path
    reason: str
    expired_at: datetime | None = None
    """When the file's certificate expired, if that is why (`host status` says so)."""


class Expired(ValueError):
    def __init__(self, not_after: datetime) -> None:
        super().__init__(f"expired {not_after.isoformat()}")
        self.not_after = not_after


@dataclass(frozen=True, slots=True)
class Loaded:
    context: ssl.SSLContext
    not_before: datetime
    not_after: datetime
    stamp: tuple[int, int]
    """mtimes of chain and key when loaded (a change means: load again)."""


def server_context() -> ssl.SSLContext:
    """TLS >= 1.2 server context, HTTP/1.1 only (what a policy fetch speaks)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


class CertificateSet:
    def __init__(
        self, directories: Iterable[Path], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.directories = list(directories)
        self.clock = clock
        self._loaded: dict[str, Loaded] = {}
        self._refused: dict[str, Refusal] = {}

    def context_for(self, name: str) -> ssl.SSLContext | None:
        loaded = self._loaded.get(name.lower().rstrip("."))
        return loaded.context if loaded else None

    def not_after(self, name: str) -> datetime | None:
        loaded = self._loaded.get(name)
        return loaded.not_after if loaded else None

    def validity(self, name: str) -> tuple[datetime, datetime] | None:
        loaded = self._loaded.get(name)
        return (loaded.not_before, loaded.not_after) if loaded else None

    @property
    def names(self) -> list[str]:
        return sorted(self._loaded)

    def refusal(self, name: str) -> Refusal | None:
        """Why the last file for `name` was refused, if it was (another may be in use)."""
        return self._refused.get(name)

    @property
    def seen_names(self) -> list[str]:
        """Names with a certificate file here, in use or refused."""
        return sorted({*self._loaded, *self._refused})

    def reload(self, force: bool = False) -> bool:
        """Load new and changed files (all with `force`: SIGHUP); True when a certificate in
        use changed."""
        changed = False
        for directory in self.directories:
            for chain in sorted(directory.glob(f"*/{CHAIN_FILE}")):
                changed |= self._consider(
                    chain.parent.name.lower(), chain, chain.with_name(KEY_FILE), force
                )
        return changed

    def _consider(self, name: str, chain: Path, key: Path, force: bool = False) -> bool:
        refused = self._refused.get(name)
        try:
            stamp = (chain.stat().st_mtime_ns, key.stat().st_mtime_ns)
        except OSError as exc:  # e.g. privkey.pem missing: said once, not at every poll
            if force or refused is None or refused.stamp != UNREADABLE:
                log.warning("event=certificate-refused name=%s reason=%r", name, str(exc))
            self._refused[name] = Refusal(UNREADABLE, chain, str(exc))
            return False
        current = self._loaded.get(name)
        if not force and (
            (current is not None and current.stamp == stamp)
            or (refused is not None and refused.stamp == stamp)
        ):
            return False
        try:
            loaded = self._load(name, chain, key, stamp)
            if current is not None and loaded.not_after < current.not_after:
                raise ValueError(
                    f"expires {loaded.not_after.isoformat()}, before the one in use "
                    f"({current.not_after.isoformat()})"
                )
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning(
                "event=certificate-refused name=%s file=%s reason=%r kept=%s",
                name,
                chain,
                str(exc),
                "in-use" if current else "none",
            )
            expired_at = exc.not_after if isinstance(exc, Expired) else None
            self._refused[name] = Refusal(stamp, chain, str(exc), expired_at)
            return False
        self._refused.pop(name, None)
        self._loaded[name] = loaded
        log.info(
            "event=certificate-loaded name=%s not_after=%s", name, loaded.not_after.isoformat()
        )
        return True

    def _load(self, name: str, chain: Path, key: Path, stamp: tuple[int, int]) -> Loaded:
        pem = chain.read_bytes()
        leaf = x509.load_pem_x509_certificate(pem)  # the first one: the leaf
        info = inspect_certificate(leaf.public_bytes(Encoding.DER))
        now = self.clock()
        if info.not_after <= now:
            raise Expired(info.not_after)
        if leaf.not_valid_before_utc > now:
            raise ValueError(f"not valid before {leaf.not_valid_before_utc.isoformat()}")
        if not matches_host(info.dns_names, name):
            raise ValueError(
                f"does not cover {name} (names: {', '.join(info.dns_names) or 'none'})"
            )
        context = server_context()
        context.load_cert_chain(chain, key)  # SSLError when the key does not match
        return Loaded(context, leaf.not_valid_before_utc, info.not_after, stamp)
