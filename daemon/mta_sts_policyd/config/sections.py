"""The configuration's sections: one frozen dataclass per TOML table, with every default.

Every key has a default so an empty file (or no file) runs; the docstrings under a field say
what it means. Built and validated by settings.py. Only `service` and `cli` see them (an import
contract): every other part gets plain settings from service/composition.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_STATE_DIR = "/var/lib/mta-sts-policyd"

StsAttributes = Literal["auto", True, False]
DaneMode = Literal["auto", "off", "notfound", "dane", "dane-only"]


@dataclass(frozen=True)
class ServerConfig:
    """The socketmap listener(s) Postfix talks to."""

    listen: tuple[str, ...] = ("127.0.0.1:8463",)
    """`HOST:PORT`, `[IPv6]:PORT` (port 1-65535) or `unix:/path`; ignored under systemd socket
    activation."""
    unix_mode: str = "0660"
    unix_group: str = ""
    """Group of the `unix:` sockets (Postfix's, e.g. "postfix"); empty: the daemon's own."""
    max_connections: int = 1000
    idle_timeout: float = 60.0
    sts_attributes: StsAttributes = "auto"
    """Postfix >= 3.10 STS/TLSRPT reply attributes: auto asks `postconf -h mail_version`."""
    dane: DaneMode = "auto"
    """DANE wins over MTA-STS (RFC 8461 §2): the reply for an enforce domain whose MX hosts have
    DNSSEC-validated TLSA records. `notfound` leaves Postfix's own dane level in force; `auto` is
    `notfound` when Postfix's smtp_tls_security_level is dane/dane-only with dnssec support,
    else `off` (Postfix does no DANE, so MTA-STS applies)."""
    exact_wildcards: bool = True
    """Render `*.x` patterns as the MX names they match (one label) instead of Postfix's `.x`."""
    postconf: str = "postconf"


@dataclass(frozen=True)
class DiscoveryConfig:
    """DNS and HTTPS settings of policy discovery (RFC 8461 §3)."""

    nameservers: tuple[str, ...] = ()
    """Empty: the system resolver configuration. Entries `IP`, `IP:PORT`, `IPv6`, `[IPv6]` or
    `[IPv6]:PORT` (port 53 unless given): an IPv6 port only in brackets, `[::1]:5353`; written
    `::1:5353` it is that address on port 53, which `check-config` and `serve` warn about."""
    dns_timeout: float = 5.0
    fetch_timeout: float = 10.0
    ca_file: str = ""
    """Empty: the operating system's trust store (honours SSL_CERT_FILE)."""
    https_port: int = 443
    """Only for test set-ups: the port policy hosts are fetched from."""


@dataclass(frozen=True)
class CacheConfig:
    """The RFC 8461 §3.3/§5.1 cache state machine and its persistent store."""

    state_dir: str = DEFAULT_STATE_DIR
    txt_recheck: float = 60.0
    cold_wait: float = 3.0
    negative_ttl: float = 300.0
    failure_backoff: float = 300.0
    refresh: bool = True
    refresh_interval: float = 86400.0
    """Seconds between background refetches of a policy in use (RFC 8461 §10.2: at least
    daily), plus or minus `refresh_jitter`."""
    refresh_jitter: float = 3600.0
    refresh_concurrency: int = 20
    memory_entries: int = 5_000
    """Policies kept in memory (LRU, ~1.5 KB each); the rest are answered from the store on
    disk (a local read, never the network). At most `max_entries`: left unwritten, it follows a
    smaller `max_entries`; both written the other way round is refused."""
    max_entries: int = 200_000
    """Policies kept at all, those in memory among them; the least recently used are dropped
    beyond that."""
    flush_interval: float = 1.0


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus exposition; off unless `listen` is set (loopback unless `allow_remote`)."""

    listen: str = ""
    allow_remote: bool = False
    """Explicit opt-in to bind a non-loopback address (a central Prometheus scraping this
    host); the endpoint has no authentication, so firewall it to the scraper."""


@dataclass(frozen=True)
class LoggingConfig:
    """Where the log goes and how much; every line is one `event=` with `key=value` fields."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """DEBUG adds one `event=answer` line per socketmap answer, with the reason."""
    target: Literal["auto", "journal", "stderr", "syslog", "file"] = "auto"
    """auto: journal when run by systemd with stderr to the journal, else stderr."""
    file: str = ""
    """The log file for target = "file" (reopened after logrotate moves it)."""


@dataclass(frozen=True)
class DkimConfig:
    """The DKIM signature on outgoing TLS reports (RFC 8460 §3 asks for one)."""

    domain: str = ""
    """The signing domain (d=)."""
    selector: str = ""
    """The selector (s=): the key is published at SELECTOR._domainkey.DOMAIN."""
    key_file: str = ""
    """The private key (PEM, RSA or Ed25519), readable by the daemon only."""


@dataclass(frozen=True)
class TlsRptConfig:
    """RFC 8460 reporting: collection, aggregation and delivery."""

    enabled: bool = False
    socket: str = "/run/mta-sts-policyd/tlsrpt.sock"
    """The libtlsrpt datagram socket (`smtp_tlsrpt_socket_name` in Postfix >= 3.10); empty: off."""
    socket_mode: str = "0660"
    socket_group: str = ""
    """Group of the datagram socket (Postfix's, so its smtp processes can write to it)."""
    organization_name: str = ""
    contact_info: str = ""
    """The reports' contact-info (RFC 8460 §4.4): a mailto: URI or an address."""
    retention_days: int = 31
    max_report_bytes: int = 5 * 1024 * 1024
    send_delay_max: float = 14400.0
    retry_window: float = 86400.0
    smtp_relay: str = "localhost:25"
    envelope_sender: str = ""
    allow_unsigned: bool = False
    https_timeout: float = 30.0
    dkim: DkimConfig = field(default_factory=DkimConfig)


@dataclass(frozen=True)
class ProbeConfig:
    """The shadow STARTTLS probe of `testing`-mode domains' MX hosts."""

    enabled: bool = True
    reprobe_interval: float = 21600.0
    timeout: float = 30.0
    concurrency: int = 10
    ehlo_name: str = ""
    port: int = 25
    """Only for test set-ups: the SMTP port MX hosts are probed on."""


@dataclass(frozen=True)
class MaillogConfig:
    """Postfix < 3.10: TLS outcomes from Postfix's log (file or systemd journal)."""

    enabled: bool = False
    path: str = ""
    """A log file (`maillog_file` or syslog's mail log); empty with enabled: the journal."""
    journal_units: tuple[str, ...] = ("postfix*",)
    exclude_syslog_names: tuple[str, ...] = ("postfix/tlsrpt-out",)
    """Sessions of the report sender's own transport are not counted (report loops)."""
    timezone: str = "UTC"
    """Time zone of RFC 3164 timestamps (they carry none)."""
    silence_alert: float = 3600.0
    """Seconds without any log line read before `event=maillog-silent` (ERROR) and the
    `maillog_silent` metric; 0: never."""


@dataclass(frozen=True)
class OwnDomainConfig:
    """One `[[own_domains]]` entry: a domain `monitor` checks, with its hosting expectations."""

    domain: str = ""
    expect_cname: tuple[str, ...] = ()
    """Delegated hosting: `mta-sts` or `_mta-sts` must be a CNAME to each of these."""
    expect_id: str = ""


@dataclass(frozen=True)
class MonitorConfig:
    """`monitor`: how often, and whom to tell about changes (state: STATE_DIR/monitor.json)."""

    interval: float = 7200.0
    jitter: float = 600.0
    """Each pass starts up to this many seconds early or late, so hosts do not check at once."""
    alert_mail_to: tuple[str, ...] = ()
    alert_mail_from: str = ""
    """The alert mail's From; empty: mta-sts-policyd@localhost."""
    smtp_relay: str = "localhost:25"
    """HOST, HOST:PORT or [IPv6]:PORT (port 25 by default) the alert mail is handed to."""
    alert_command: tuple[str, ...] = ()
    """A program and its arguments (no shell); the transitions arrive as JSON on stdin."""
    in_serve: bool = False
    """Also run the monitor inside `serve` (its gauges then appear on the metrics endpoint)."""
    allow_private: bool = False
    """Only for test set-ups: contact private and loopback addresses too."""


@dataclass(frozen=True)
class ReportsInConfig:
    """TLS reports others send about the operator's own domains (`reports-in`)."""

    domains: tuple[str, ...] = ()
    """The own domains whose reports are stored; reports about any other domain are rejected."""
    retention_days: int = 400
    quarantine_keep: int = 200
    """Rejected inputs kept in `reports-in-quarantine/` in the state directory."""
    min_days: int = 14
    """Readiness for `enforce`: days of reports about the served policy needed."""
    min_organizations: int = 2
    """Readiness for `enforce`: distinct reporting organisations needed."""
    spool_dir: str = "/var/spool/mta-sts-policyd-reports"
    """Maildir between the host's HTTPS intake and `serve` (both in its group); empty: the
    host writes the store itself (only when it runs as the daemon's user)."""
    spool_interval: float = 30.0
    """Seconds between `serve`'s passes over spool_dir."""


@dataclass(frozen=True)
class HostConfig:
    """`mta-sts-policyd host`: HTTPS for the policies of your own domains."""

    listen: tuple[str, ...] = ("0.0.0.0:443", "[::]:443")
    """Each address separately (asyncio binds `[::]` to IPv6 only)."""
    policy_dir: str = "/var/lib/mta-sts-policyd-host/policies"
    """What `generate --write DIR` fills: DIR/DOMAIN/.well-known/mta-sts.txt."""
    state_dir: str = "/var/lib/mta-sts-policyd-host"
    """The host's own state: the ACME account and certificates (acme/). Not the daemon's
    cache.state_dir: the host runs as its own user (systemd/mta-sts-policyd-host.service)."""
    cert_dirs: tuple[str, ...] = ("/etc/letsencrypt/live",)
    """Folders of NAME/fullchain.pem + NAME/privkey.pem (certbot's layout), NAME = mta-sts.D."""
    poll_interval: float = 10.0
    """Seconds between checks for changed policy and certificate files (SIGHUP: at once)."""
    acme_directory: str = ""
    """ACME (RFC 8555) directory URL, e.g. Let's Encrypt's; empty: certificates from files."""
    acme_names: tuple[str, ...] = ()
    """The allow-list: names (mta-sts.DOMAIN) the host gets certificates for."""
    acme_challenge: Literal["tls-alpn-01", "http-01"] = "tls-alpn-01"
    """tls-alpn-01 (RFC 8737) on the serving port, or http-01 (RFC 8555 §8.3) on http_listen."""
    http_listen: tuple[str, ...] = ("0.0.0.0:80", "[::]:80")
    """Plain-HTTP listeners, only with acme_challenge = "http-01": challenge answers, else 404."""
    acme_email: str = ""
    """Contact address given to the ACME server (expiry notices); empty: none."""
    acme_ca_file: str = ""
    """Trust anchor for the ACME server's HTTPS (test set-ups); empty: the system store."""
    reports_path: str = ""
    """URL path where senders POST TLS reports (RFC 8460 §5.4), e.g. "/tlsrpt"; empty: off."""
    reports_max_bytes: int = 1024 * 1024
    """Largest report body taken (as sent, gzip or JSON); larger ones get 413."""
    expect_addresses: tuple[str, ...] = ()
    """`host status`: the addresses mta-sts.D must resolve to (only these)."""
    expect_cname: tuple[str, ...] = ()
    """`host status`: mta-sts.D must be a CNAME to one of these (provider set-ups)."""
    metrics_listen: str = ""
    """The host process's own metrics endpoint (HOST:PORT, loopback unless metrics.allow_remote);
    empty: none."""
    status_interval: float = 3600.0
    """Seconds between the host process's own `host status` checks behind its metrics."""


@dataclass(frozen=True)
class FleetConfig:
    """Fleet mode: many daemons share one policy cache and send one TLS report per domain and
    day through Redis. Off while `redis` and `sentinels` are empty; Redis is never needed to
    answer a query correctly (docs/fleet.md)."""

    redis: str = ""
    """redis://HOST:PORT/DB, rediss://... (TLS) or unix:///path/to/redis.sock."""
    sentinels: tuple[str, ...] = ()
    """Sentinel addresses ("HOST:PORT"), instead of `redis`; `service` names the master."""
    service: str = ""
    """The Sentinel service (master) name, with `sentinels`."""
    password_file: str = ""
    """A file holding the Redis password (kept out of the config file); empty: none or in URL."""
    ca_file: str = ""
    """Trust anchor for rediss:// (empty: the system store)."""
    key_prefix: str = "mta-sts"
    node_name: str = ""
    """This daemon's name in the fleet (`fleet status`, report snapshots), one per daemon: one
    word of letters, digits, dots, hyphens and underscores; empty: the host name."""
    heartbeat_interval: float = 15.0
    """Seconds between this node's heartbeats in Redis (`fleet status`; a node silent for four
    intervals is shown as gone)."""
    connect_timeout: float = 0.5
    command_timeout: float = 0.25
    """Seconds a Redis call may take before it counts as a failure (the client's own timeout)."""
    breaker_failures: int = 3
    """Failures in a row that take Redis off the answer path."""
    breaker_reset: float = 15.0
    """Seconds the breaker stays open before one trial call."""
    fetch_lock: float = 30.0
    """Seconds a node holds a domain's fleet-wide fetch lock at most (a crashed holder's lock
    expires)."""
    entry_grace: float = 7 * 86400.0
    """Shared entries expire this long after their policy does (RFC 8461 §5.1 stale policies)."""
    revalidate_interval: float = 300.0
    """Seconds between re-reads of the shared versions (pub/sub loses messages while away)."""
    refresh_lease: float = 600.0
    """Seconds a node owns a claimed batch of refreshes (a crashed node's claims come back)."""
    refresh_batch: int = 50
    """Domains a node claims at once from the shared refresh queue (it claims again until
    none is due)."""
    forget_after: float = 30 * 86400.0
    """Domains no node has asked for in this long leave the shared refresh queue."""
    snapshot_interval: float = 300.0
    """Seconds between uploads of this node's TLS-RPT counts of the open days."""
    report_settle: float = 3600.0
    """Seconds after 00:00 UTC before a fleet report is built (every last count in)."""
    report_deadline: float = 6 * 3600.0
    """Seconds after 00:00 UTC after which a node that has not uploaded is left out of the
    report (a report never goes out before `report_settle`)."""
    report_lease: float = 180.0
    """Seconds a node holds a report it is sending (renewed before each destination); after a
    crash another node takes the report over when it expires. Longer than one delivery."""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tlsrpt: TlsRptConfig = field(default_factory=TlsRptConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    maillog: MaillogConfig = field(default_factory=MaillogConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    own_domains: tuple[OwnDomainConfig, ...] = ()
    host: HostConfig = field(default_factory=HostConfig)
    reports_in: ReportsInConfig = field(default_factory=ReportsInConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    @property
    def state_dir(self) -> Path:
        return Path(self.cache.state_dir)
