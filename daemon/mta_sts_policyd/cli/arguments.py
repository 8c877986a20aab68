"""Values named on the command line: domain names and files, refused with the exit code that
says whose problem it is.

A domain that is not one, or a file that cannot be read, is the caller's to fix (64); an
output file that cannot be written is EX_CANTCREAT (73). Neither is a temporary failure (75),
which is what an unexpected OSError of a command becomes.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.sts.keys import domain_for_name


def domain_name(text: str) -> str:
    """argparse type: a mail domain as its A-label policy domain (`domain_for_name`)."""
    domain = domain_for_name(text)
    if domain is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a domain name")
    return domain


def lookup_key(text: str) -> str:
    """argparse type: a key as Postfix sends it (a next-hop domain or `[host]:port`), never
    empty or with blanks, which Postfix cannot send; any such key is passed on as it is."""
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a lookup key (a domain, or a next hop such as [mx.example.com]:25)"
        )
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
