"""The checks that need more than one key, or that say more than "wrong type" of one.

Each takes the built `Config` and raises ConfigError listing every problem it finds, each
"key: why" (settings.config_and_problems runs them all and keeps each key's first word).
`without_refused` is the one rule for what a check run after the loader may say, and
`config_warnings` the values that load but are seldom what was meant.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mta_sts_policyd.config.sections import Config
from mta_sts_policyd.config.value_checks import state_dir_problem
from mta_sts_policyd.endpoints import (
    nameserver_warning,
    parse_listen_address,
    parse_nameserver,
    parse_smtp_relay,
)
from mta_sts_policyd.errors import ConfigError


def without_refused(problems: Sequence[str], refused: Sequence[str]) -> list[str]:
    """`problems` (each "key: why") less those about a key that `refused` already names: the
    same key or a part of it (`tlsrpt.dkim` refused: `tlsrpt.dkim.key_file`), or a dotted key
    the text brings in (`set metrics.allow_remote = true`).

    A check run after the loader saw a refused key at its default, so what it says of that
    key describes a value the operator never wrote, or says the same again in other words.
    Filtering by key, not by table, keeps every other check running: a bad `logging.level`
    must not hide a missing `discovery.ca_file`."""
    keys = {problem_key(p) for p in refused}
    dotted = sorted(re.escape(k) for k in keys if "." in k)
    mention = re.compile(rf"(?<![\w.])(?:{'|'.join(dotted)})(?!\w)") if dotted else None

    def about_refused(problem: str) -> bool:
        key = problem_key(problem)
        if key in keys or any(key.startswith((k + ".", k + "[")) for k in keys):
            return True
        return mention is not None and mention.search(problem) is not None

    return [p for p in problems if not about_refused(p)]


def problem_key(problem: str) -> str:
    """The dotted key a problem names ("key: why")."""
    return problem.partition(": ")[0]


def _check_listeners(config: Config) -> None:
    if not config.server.listen:
        raise ConfigError("server.listen: expected at least one address")
    check_listen_list(config.server.listen, "server.listen")


def check_listen_list(
    addresses: Sequence[str], key: str, *, indexed: bool = True, tcp_only: bool = False
) -> None:
    """Each address valid (every bad one named, by its index in the file's list) and none
    twice: the second bind of one address would fail as "address already in use", which
    reads like another process holding it. `tcp_only` (the policy host's listeners) refuses
    `unix:` entries too, each by its index."""
    problems: list[str] = []
    for i, address in enumerate(addresses):
        where = f"{key}[{i}]" if indexed else key
        try:
            host, _ = parse_listen_address(address, where)
        except ConfigError as exc:
            problems += exc.problems
            continue
        if tcp_only and host == "unix":
            problems.append(f"{where}: expected HOST:PORT or [IPv6]:PORT (TCP), got {address!r}")
    twice = sorted({a for a in addresses if addresses.count(a) > 1})
    if twice:
        problems.append(f"{key}: {', '.join(twice)} listed more than once")
    if problems:
        raise ConfigError(*problems)


REMOTE_METRICS_HINT = "set metrics.allow_remote = true to serve metrics beyond this host"
"""Said with a metrics listener refused for not being loopback; naming the key lets
`without_refused` leave that out when `metrics.allow_remote` itself was refused."""


def _check_metrics(config: Config) -> None:
    m = config.metrics
    if m.listen:
        host, _ = parse_listen_address(m.listen, "metrics.listen")
        if host not in ("127.0.0.1", "::1", "localhost") and not m.allow_remote:
            raise ConfigError(
                f"metrics.listen: expected a loopback address, got {host!r} ({REMOTE_METRICS_HINT})"
            )


def _check_nameservers(config: Config) -> None:
    problems: list[str] = []
    for i, ns in enumerate(config.discovery.nameservers):
        try:
            parse_nameserver(ns, f"discovery.nameservers[{i}]")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(*problems)


def _check_own_domains(config: Config) -> None:
    problems = [
        f"own_domains[{i}].domain: expected a domain name, got {own.domain!r}"
        if own.domain
        else f"own_domains[{i}].domain: required (the domain's name)"
        for i, own in enumerate(config.own_domains)
        if "." not in own.domain or " " in own.domain or own.domain.startswith(".")
    ]
    seen: dict[str, int] = {}
    for i, own in enumerate(config.own_domains):
        name = own.domain.strip().rstrip(".").lower()
        if name and name in seen:
            problems.append(f"own_domains[{i}].domain: {own.domain!r} is own_domains[{seen[name]}]")
        seen.setdefault(name, i)
        if own.expect_id and not _POLICY_ID.fullmatch(own.expect_id):
            problems.append(
                f"own_domains[{i}].expect_id: expected 1 to 32 letters and digits"
                f" (RFC 8461 §3.1), got {own.expect_id!r}"
            )
        problems += [
            f"own_domains[{i}].expect_cname[{j}]: expected a host name, got {name!r}"
            for j, name in enumerate(own.expect_cname)
            if not _HOST_NAME.fullmatch(name.rstrip("."))
        ]
    if problems:
        raise ConfigError(*problems)


_POLICY_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))+")


def _check_mail_settings(config: Config) -> None:
    """The relays and addresses mail is sent through and as, read as the senders read them, so
    that a typo is refused at load and not found when the first alert or report is due."""
    m, t, problems = config.monitor, config.tlsrpt, list[str]()
    for key, relay in (("monitor.smtp_relay", m.smtp_relay), ("tlsrpt.smtp_relay", t.smtp_relay)):
        try:
            parse_smtp_relay(relay, key)
        except ConfigError as exc:
            problems += exc.problems
    addresses = [(f"monitor.alert_mail_to[{i}]", a) for i, a in enumerate(m.alert_mail_to)]
    addresses += [("monitor.alert_mail_from", m.alert_mail_from)] if m.alert_mail_from else []
    addresses += [("tlsrpt.envelope_sender", t.envelope_sender)] if t.envelope_sender else []
    problems += [
        f"{key}: expected an e-mail address, got {address!r}"
        for key, address in addresses
        if not _MAIL_ADDRESS.fullmatch(address)
    ]
    if problems:
        raise ConfigError(*problems)


_MAIL_ADDRESS = re.compile(r"[^\s@<>]+@[^\s@<>]+")


def _check_reporting(config: Config) -> None:
    """What sending reports needs, said up front (all of it) instead of failing at 00:00 UTC."""
    t, problems = config.tlsrpt, []
    if config.maillog.enabled and not t.enabled:
        problems.append("maillog.enabled: needs tlsrpt.enabled = true (the log feeds reports)")
    if t.enabled:
        for key in ("organization_name", "contact_info", "envelope_sender"):
            if not getattr(t, key):
                problems.append(f"tlsrpt.{key}: required when tlsrpt.enabled = true")
        if t.contact_info and "@" not in t.contact_info:
            problems.append(
                f"tlsrpt.contact_info: expected an e-mail address, got {t.contact_info!r}"
            )
        dkim = t.dkim
        if not (dkim.domain and dkim.selector and dkim.key_file) and not t.allow_unsigned:
            problems.append(
                "tlsrpt.dkim: domain, selector and key_file are required to sign report mail "
                "(RFC 8460 §3); set tlsrpt.allow_unsigned = true to send unsigned reports"
            )
    if problems:
        raise ConfigError(*problems)


def fit_unwritten_cache_sizes(config: Config, data: Mapping[str, Any]) -> Config:
    """A cache size left at its default follows the other one where they would contradict:
    `max_entries = 1000` alone keeps 1000 in memory (not the default 5000), and
    `memory_entries = 300000` alone keeps 300000 at all (not 200000). Only two written values
    that contradict each other are refused (`_check_cache_sizes`)."""
    section = data.get("cache")
    written = section if isinstance(section, Mapping) else {}
    c = config.cache
    if c.memory_entries <= c.max_entries:
        return config
    if "memory_entries" not in written:
        return replace(config, cache=replace(c, memory_entries=c.max_entries))
    if "max_entries" not in written:
        return replace(config, cache=replace(c, max_entries=c.memory_entries))
    return config


def _check_cache_sizes(config: Config) -> None:
    """The memory tier holds a part of the policies kept at all, so it cannot be larger:
    `max_entries` would not hold (the store drops rows of policies memory still answers, and a
    restart loses them), and which of the two was meant cannot be known."""
    c = config.cache
    if c.memory_entries > c.max_entries:
        raise ConfigError(
            f"cache.memory_entries: {c.memory_entries} is more than cache.max_entries ="
            f" {c.max_entries} (the policies kept at all, those in memory among them): set"
            f" cache.memory_entries to at most {c.max_entries}, or raise cache.max_entries"
        )


def _check_logging(config: Config) -> None:
    lg = config.logging
    if lg.target == "file" and not lg.file.startswith("/"):
        raise ConfigError('logging.file: expected an absolute path when logging.target = "file"')


def _check_timezone(config: Config) -> None:
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(config.maillog.timezone)
    except (ValueError, KeyError, OSError):
        raise ConfigError(
            f"maillog.timezone: expected a time zone name such as UTC or Europe/Berlin, "
            f"got {config.maillog.timezone!r}"
        ) from None


FLEET_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_fleet(config: Config) -> None:
    """One way to reach Redis, in a form redis-py takes."""
    f, problems = config.fleet, []
    if f.redis and f.sentinels:
        problems.append("fleet.redis: set either fleet.redis or fleet.sentinels, not both")
    if f.redis and not f.redis.startswith(FLEET_SCHEMES):
        problems.append(
            f"fleet.redis: expected a redis://, rediss:// or unix:/// URL, got {f.redis!r}"
        )
    for i, address in enumerate(f.sentinels):
        try:
            host, _ = parse_listen_address(address, f"fleet.sentinels[{i}]")
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if host == "unix":
            problems.append(f"fleet.sentinels[{i}]: expected HOST:PORT, got {address!r}")
    if f.sentinels and not f.service:
        problems.append("fleet.service: required with fleet.sentinels (the master's name)")
    if not f.key_prefix or any(c.isspace() for c in f.key_prefix):
        problems.append(f"fleet.key_prefix: expected a word without spaces, got {f.key_prefix!r}")
    if problems:
        raise ConfigError(*problems)


def _check_host(config: Config) -> None:
    """What the policy host would otherwise take without a word and then not do: names it
    never gets a certificate for, or for no name it serves; an ACME server over plain HTTP; a
    certificate folder relative to wherever it was started."""
    h, problems = config.host, list[str]()
    if h.acme_names and not h.acme_directory:
        problems.append(
            "host.acme_names: needs host.acme_directory (the ACME server that issues them);"
            " without it no certificate is requested"
        )
    for i, name in enumerate(h.acme_names):
        bare = name.rstrip(".")
        if not _HOST_NAME.fullmatch(bare):
            problems.append(f"host.acme_names[{i}]: expected a host name, got {name!r}")
        elif not bare.lower().startswith("mta-sts."):
            problems.append(
                f"host.acme_names[{i}]: expected mta-sts.DOMAIN (the only names the host"
                f" serves policies for), got {name!r}"
            )
    if h.acme_directory and not h.acme_directory.startswith("https://"):
        problems.append(
            "host.acme_directory: expected an https:// URL (RFC 8555 §6.1: ACME runs over"
            f" HTTPS only), got {h.acme_directory!r}"
        )
    problems += [
        f"host.cert_dirs[{i}]: expected {problem}, got {folder!r}"
        for i, folder in enumerate(h.cert_dirs)
        if (problem := state_dir_problem(folder))
    ]
    if problems:
        raise ConfigError(*problems)


CROSS_KEY_CHECKS: tuple[Callable[[Config], None], ...] = (
    _check_listeners,
    _check_mail_settings,
    _check_metrics,
    _check_nameservers,
    _check_own_domains,
    _check_reporting,
    _check_cache_sizes,
    _check_logging,
    _check_timezone,
    _check_fleet,
    _check_host,
)


def config_warnings(config: Config) -> list[str]:
    """Values that load but are seldom what was meant, each "key: why": `check-config` prints
    them, `serve` logs them at start and at each reload; none stops anything."""
    found = [
        nameserver_warning(ns, f"discovery.nameservers[{i}]")
        for i, ns in enumerate(config.discovery.nameservers)
    ]
    found.append(_password_file_warning(config))
    return [warning for warning in found if warning]


def _password_file_warning(config: Config) -> str | None:
    """The Redis password lets its holder rewrite the fleet's shared cache and reports; a file
    others on the host can read is seldom meant (docs/fleet.md: mode 0600)."""
    f = config.fleet
    if not f.password_file or not (f.redis or f.sentinels):
        return None
    try:
        mode = stat.S_IMODE(os.stat(f.password_file).st_mode)
    except OSError:
        return None  # missing or unreadable: check-config refuses it (service/fleet_parts.py)
    if not mode & 0o077:
        return None
    return (
        f"fleet.password_file: {f.password_file} is open to its group or others (mode"
        f" {mode:04o}): chmod 0600 it, owned by the daemon's user"
    )
