"""The one table of exit codes every subcommand uses (README "Exit codes").

Scripts and systemd act on these numbers, so each outcome has exactly one code, whichever
command reports it: a domain whose answer is `secure ...` exits 0 from `query`, `resolve` and
`cache show|refresh` alike; an answer of "no policy" (none, `testing`, `none` mode, an invalid
policy) exits 1 from all of them. The values follow BSD sysexits(3) where one fits.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Found / done: a policy applies, a command succeeded."""
    NOT_FOUND = 1
    """No policy (or testing/none mode), nothing stored for the request, a failed probe."""
    USAGE = 64
    """EX_USAGE: bad arguments, a file named on the command line that cannot be read."""
    UNAVAILABLE = 69
    """EX_UNAVAILABLE: `serve` found another `serve` holding the state directory
    (errors.StateLockedError)."""
    CANT_CREATE = 73
    """EX_CANTCREAT: the state directory or a store in it cannot be used (serve, or any command
    that opens a store; errors.StateUnusableError, also a damaged store a command only reads),
    or an output file named on the command line cannot be written."""
    TEMPFAIL = 75
    """EX_TEMPFAIL: could not find out now (DNS/HTTPS failure, daemon not reachable); for
    `serve` a listen address or unix socket another process holds; for the reports-in intake
    also a store that cannot be used, so that Postfix's pipe retries the report."""
    CONFIG = 78
    """EX_CONFIG: the configuration is invalid; systemd does not restart on it."""
    INTERRUPTED = 130
    """128 + SIGINT: stopped with Ctrl-C."""
    PIPE_CLOSED = 141
    """128 + SIGPIPE: the reader went away (`| head`); like any Unix filter, without output."""


def answer_code(reply: str | bytes) -> ExitCode:
    """The code of a socketmap answer (`OK ...`, `NOTFOUND `, `TEMP ...`) or of the reply
    payload Postfix would get (`secure match=...`), so every command maps answers alike."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    status = text.split(" ", 1)[0]
    if status in ("NOTFOUND", ""):
        return ExitCode.NOT_FOUND
    if status in ("TEMP", "TIMEOUT", "PERM"):
        return ExitCode.TEMPFAIL
    return ExitCode.OK
