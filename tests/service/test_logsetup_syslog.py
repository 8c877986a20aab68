"""`[logging] target = "syslog"`: lines reach the local syslog socket, facility mail."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta_sts_policyd.service import logsetup


@pytest.fixture
def syslog_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A real unix datagram socket standing in for /dev/log, which this machine lacks."""
    path = tmp_path / "log"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(5)
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(path))
    root = logging.getLogger()
    before = list(root.handlers), root.level
    yield receiver
    for handler in list(root.handlers):
        if handler not in before[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(before[1])
    receiver.close()


def test_syslog_lines_carry_mail_priority_tag_and_event(syslog_socket: socket.socket) -> None:
    logsetup.setup_logging("INFO", "syslog")
    logging.getLogger("mta_sts_policyd.test").warning("event=syslog-check key=%s", "value")
    datagram = syslog_socket.recv(65536).decode()
    assert datagram.startswith("<20>")  # facility mail (2) * 8 + warning (4)
    assert "mta-sts-policyd[" in datagram
    assert "event=syslog-check key=value" in datagram
    logging.getLogger("mta_sts_policyd.test").info("event=second")
    assert syslog_socket.recv(65536).decode().startswith("<22>")  # mail.info
