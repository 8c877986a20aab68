"""The socketmap listeners `serve` opens at start: the sockets systemd passed, else each
address of `server.listen` (TCP, or a unix socket with its mode and group).

A bind that fails names its address and the cause alone, so a start that fails says which
listener and why ("cannot listen on 127.0.0.1:8463: Address already in use").
"""

from __future__ import annotations

import logging
import os
import socket

from mta_sts_policyd.config.settings import ServerConfig, parse_listen_address
from mta_sts_policyd.postfix.server import SocketmapServer, systemd_listen_sockets

log = logging.getLogger(__name__)


async def open_listeners(server: SocketmapServer, settings: ServerConfig) -> list[tuple[str, int]]:
    """Listen where `settings.listen` says, or on systemd's sockets when it passed some;
    returns the TCP addresses bound (host, port), in order. OSError names the address."""
    inherited = systemd_listen_sockets()
    if inherited:
        await server.adopt_sockets(inherited)
        log.info("event=listening source=systemd sockets=%d", len(inherited))
        return []
    bound: list[tuple[str, int]] = []
    for address in settings.listen:
        if address.startswith("unix:"):
            group = settings.unix_group or None
            await server.listen_unix(address[5:], int(settings.unix_mode, 8), group)
            log.info("event=listening address=%s", address)
            continue
        host, port = parse_listen_address(address, "server.listen")
        try:
            bound.append(await server.listen_tcp(host, port))
        except OSError as exc:  # say which address: "Name or service not known" alone does not
            raise OSError(exc.errno, f"cannot listen on {address}: {_why(exc)}") from exc
        log.info("event=listening address=%s:%d", *bound[-1])
    return bound


def _why(exc: OSError) -> str:
    """The cause alone: the event loop's text repeats the address ("error while attempting to
    bind on address (...): address already in use"); a resolver error keeps its own text."""
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    return str(exc.strerror or exc)
