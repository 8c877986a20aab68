"""What `serve` opens on this machine at start, checked without starting (run by
`check-config`): the CA file, the socket groups, the log file's folder. The loader cannot check
these (they are facts of the machine, not of the file), so without this `check-config` would
say OK and `serve` then stop with 78."""

from __future__ import annotations

import os
from pathlib import Path

from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import ConfigError, StateUnusableError
from mta_sts_policyd.state_files import refuse_non_directory


def check_ca_file(path: str) -> None:
    """ConfigError when `path` cannot serve as the trust store of a fetch (unreadable, or no
    certificate in it): loaded exactly as the fetch loads it. Also `--ca-file`'s check."""
    from mta_sts_policyd.net.tls import client_context

    client_context(ca_file=path)


def check_local_resources(config: Config) -> None:
    """ConfigError listing every resource `serve` would refuse (the state directory's locking
    and stores are `serve`'s own checks at start: they need the daemon's user)."""
    from mta_sts_policyd.net.unix_socket import group_id

    problems: list[str] = []
    if config.discovery.ca_file:
        try:
            check_ca_file(config.discovery.ca_file)
        except ConfigError as exc:
            problems += [f"discovery.ca_file: {p}" for p in exc.problems]
    groups: list[tuple[str, str]] = []
    if any(a.startswith("unix:") for a in config.server.listen):
        groups.append(("server.unix_group", config.server.unix_group))
    if config.tlsrpt.enabled and config.tlsrpt.socket:
        groups.append(("tlsrpt.socket_group", config.tlsrpt.socket_group))
    for key, group in groups:
        if group:
            try:
                group_id(group, key)
            except ConfigError as exc:
                problems += exc.problems
    try:  # `serve` would exit 73 on it
        refuse_non_directory(Path(config.cache.state_dir), "use it as the state directory")
    except StateUnusableError as exc:
        problems.append(f"cache.state_dir: {exc}")
    if config.logging.target == "file" and config.logging.file:
        folder = Path(config.logging.file).parent
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"logging.file: the folder {folder} does not exist or is not writable")
    if problems:
        raise ConfigError(*problems)
