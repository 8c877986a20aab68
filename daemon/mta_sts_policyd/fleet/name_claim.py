"""One node name, one daemon: this process's claim on its `[fleet] node_name`.

Two daemons given one name would overwrite each other's heartbeat (`fleet status` shows one
node where two run) and, worse, each other's TLS-RPT snapshot, one field per name: the fleet's
report would hold the counts of one of them only. So each process writes a random instance id
with its heartbeat and looks at the record under its name before writing its own. A record of
another instance that is running and beat after this process started means another daemon
uses the name: a conflict, which lasts `hold` seconds (four heartbeats) after the last sighting.
A record of its own instance read back confirms the name is this process's.

The snapshot uploader uploads only under a confirmed name without a conflict: the counts stay
in each local store (nothing lost) until each daemon has a name of its own, then the uploads
start over. Pure state: the heartbeat feeds it, the uploader asks it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

HOLD = 60.0
"""Seconds a sighting of another instance counts (four heartbeats of the default 15 s)."""


def new_instance() -> str:
    return secrets.token_hex(8)


@dataclass
class NameClaim:
    instance: str = field(default_factory=new_instance)
    """This process's random id, written with every heartbeat."""
    hold: float = HOLD
    conflict_at: float = 0.0
    """When another running instance was last seen under this name (0.0: never)."""
    other: str = ""
    """That other instance's id."""
    confirmed: bool = False
    """This process read its own record back once: no one else wrote under its name between."""

    def observe(self, instance: str, state: str, seen: float, started: float, now: float) -> None:
        """The record found under this node's name before a heartbeat writes its own."""
        if instance == self.instance:
            self.confirmed = True
        elif state != "stopped" and seen > started:  # a predecessor stopped before this start
            self.conflict_at, self.other = now, instance or "unknown"

    def in_conflict(self, now: float) -> bool:
        return self.conflict_at > 0.0 and now - self.conflict_at <= self.hold

    def may_upload(self, now: float) -> bool:
        """Whether this node's TLS-RPT counts may go to Redis under its name now."""
        return self.confirmed and not self.in_conflict(now)
