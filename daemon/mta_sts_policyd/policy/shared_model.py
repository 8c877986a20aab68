"""The values the fleet's shared tier hands the policy cache (fleet mode, docs/fleet.md),
already re-validated by the fleet (policy/types.py has the protocol). Pure: no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.sts.model import Policy


@dataclass(frozen=True, slots=True)
class SharedPolicy:
    """A policy another node (or this one) fetched, read back from the fleet's shared tier and
    already re-validated (its lines re-parsed, its fields checked against them)."""

    domain: str
    policy_id: str
    policy: Policy
    fetched_at: float
    version: int = 0
    """The shared version number of the domain when this was read (0: unknown)."""

    def valid(self, now: float) -> bool:
        return now < self.fetched_at + self.policy.max_age


@dataclass(frozen=True, slots=True)
class SharedFailure:
    """The fleet's failure back-off of one policy id (RFC 8461 §3.3: one attempt per id and
    back-off period for the whole fleet, not per node)."""

    policy_id: str
    at: float
    result_type: ResultType
    reason: str


@dataclass(frozen=True, slots=True)
class SharedView:
    """What the fleet knows of one domain: its policy, failure back-off and negative cache."""

    policy: SharedPolicy | None = None
    failure: SharedFailure | None = None
    negative_until: float = 0.0
    """"No policy published", found by some node, until then (0.0: not known)."""
