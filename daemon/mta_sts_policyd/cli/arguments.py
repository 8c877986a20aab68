"""Values named on the command line: domain names, numbers, addresses and files, refused with
the exit code that says whose problem it is.

A domain that is not one, or a file that cannot be read, is the caller's to fix (64); an
output file that cannot be written is EX_CANTCREAT (73). Neither is a temporary failure (75),
which is what an unexpected OSError of a command becomes.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.config.settings import parse_listen_address
from mta_sts_policyd.endpoints import nameserver_warning, parse_nameserver, without_inet_prefix
from mta_sts_policyd.errors import ConfigError, InvalidName
from mta_sts_policyd.sts.keys import domain_for_name

MAX_SECONDS = 30 * 86400.0
"""The longest wait or interval taken (30 days): beyond it a number is a typo, and the event
loop's timers refuse what does not fit."""


def domain_name(text: str) -> str:
    """argparse type: a mail domain as its A-label policy domain (`domain_for_name`)."""
    domain = domain_for_name(text)
    if domain is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a domain name")
    return domain


def mx_pattern(text: str) -> str:
    """argparse type of `--mx`: a pattern the policy parser accepts (a trailing dot is
    dropped when the file is written), refused as the argument, not as a line of a file."""
    from mta_sts_policyd.sts.names import to_a_label
    from mta_sts_policyd.sts.policy import mx_pattern_problem

    pattern = text.rstrip(".")
    problem = mx_pattern_problem(pattern)
    if problem is None:
        return text
    wildcard, name = ("*.", pattern[2:]) if pattern.startswith("*.") else ("", pattern)
    if not name.isascii():
        with suppress(InvalidName):
            problem += f"; as A-labels: {wildcard}{to_a_label(name)}"
    raise argparse.ArgumentTypeError(f"{text!r} is not an mx pattern: {problem}")


def lookup_key(text: str) -> str:
    """argparse type: a key as Postfix sends it (a next-hop domain or `[host]:port`), never
    empty or with blanks, which Postfix cannot send; any such key is passed on as it is."""
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a lookup key (a domain, or a next hop such as [mx.example.com]:25)"
        )
    return text


def seconds(text: str) -> float:
    """argparse type: a duration in seconds, above 0 and finite (`nan`, `-1` and `1e400` are
    refused here, not by a timer deep inside)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds (above 0, at most {MAX_SECONDS:.0f})"
        )
    return value


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """argparse type factory: an integer from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return value

    return parse


port_number = whole_number(1, 65535)
"""argparse type: a TCP port."""

days_left = whole_number(0, 3650)
"""argparse type: a certificate's days left, the warning and critical thresholds."""


def _configuration_rule(parse: Callable[[str, str], object], what: str) -> Callable[[str], str]:
    """argparse type from the configuration's own parser `parse(text, key)`: the value is read
    by the same rule as in the file, and a bad one is a usage error (64), not a 78."""

    def check(text: str) -> str:
        try:
            parse(text, what)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problems[0].removeprefix(f"{what}: ")) from None
        return text

    check.__name__ = what
    return check


_listen_rule = _configuration_rule(parse_listen_address, "address")


def listen_address(text: str) -> str:
    """argparse type of `--listen` and `--socketmap`: `HOST:PORT`, `[IPv6]:PORT` or
    `unix:/path`, also with Postfix's `inet:` in front (dropped), so the address in
    `smtp_tls_policy_maps = socketmap:inet:HOST:PORT:postfix` can be pasted as it is."""
    return _listen_rule(without_inet_prefix(text))


_nameserver_rule = _configuration_rule(parse_nameserver, "nameserver")


def nameserver(text: str) -> str:
    """argparse type of every command's `--nameserver`: `IP[:PORT]` of a DNS server, read by
    the rule of `discovery.nameservers`, and warned about on stderr as that key is
    (`::1:5353` is port 53 on ::1:5353, not port 5353 on ::1); the warning stops nothing."""
    checked = _nameserver_rule(text)
    warning = nameserver_warning(checked, "--nameserver")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return checked


def state_directory(text: str) -> str:
    """argparse type: `--state-dir`, by the configuration's rule for `cache.state_dir`."""
    from mta_sts_policyd.config.value_checks import state_dir_problem

    problem = state_dir_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"expected {problem}, got {text!r}")
    return text


def ip_address(text: str) -> str:
    """argparse type: an IPv4 or IPv6 address, in its canonical text form."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def ca_file(text: str) -> str:
    """argparse type: a file of trusted CA certificates (PEM), loaded as the fetch will load
    it: one that cannot be read or holds no certificate is a usage error naming it."""
    from mta_sts_policyd.service.preflight import check_ca_file

    try:
        check_ca_file(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problems[0]) from None
    return text


class FileArgumentError(Exception):
    """A file named by an option could not be read or written; `exit_code` says which."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextmanager
def file_argument(option: str, path: Path, *, writing: bool = False) -> Iterator[None]:
    """Turn an OSError (or undecodable text) on `path` into a FileArgumentError naming the
    option and the file."""
    try:
        yield
    except UnicodeDecodeError:
        raise FileArgumentError(f"{option} {path}: not UTF-8 text", ExitCode.USAGE) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if writing:
            message = f"{option} {path}: cannot write: {reason}"
            raise FileArgumentError(message, ExitCode.CANT_CREATE) from None
        raise FileArgumentError(f"{option} {path}: {reason}", ExitCode.USAGE) from None
