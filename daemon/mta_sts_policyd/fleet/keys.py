"""Every Redis key and channel of a fleet, named in one place.

Keys carry the operator's prefix (several fleets can share one Redis) and the schema version
(a daemon never reads values written in a form it does not know: a new format gets new keys).
Domains in keys are A-labels, so every key is ASCII.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class FleetKeys:
    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:v{SCHEMA}"

    # --- the shared policy cache ------------------------------------------------------------

    def policy(self, domain: str) -> str:
        """One domain's shared cache entry (JSON), expiring some days after its policy."""
        return f"{self.base}:policy:{domain}"

    def fetch_lock(self, domain: str) -> str:
        """Held by the one node fetching the domain's policy (SET NX PX)."""
        return f"{self.base}:fetch-lock:{domain}"

    def failure(self, domain: str) -> str:
        """The shared failure back-off: which id failed, when, and why."""
        return f"{self.base}:failure:{domain}"

    def negative(self, domain: str) -> str:
        """No policy published, remembered fleet-wide for the negative TTL."""
        return f"{self.base}:negative:{domain}"

    @property
    def versions(self) -> str:
        """Hash domain -> version number, bumped on every shared write (revalidation)."""
        return f"{self.base}:versions"

    @property
    def invalidations(self) -> str:
        """Pub/sub channel: "DOMAIN VERSION" after every shared write."""
        return f"{self.base}:invalidate"

    # --- the shared refresh queue -----------------------------------------------------------

    @property
    def refresh_due(self) -> str:
        """Sorted set: domain -> when its refresh is due (a claim moves it to the lease end)."""
        return f"{self.base}:refresh:due"

    @property
    def refresh_used(self) -> str:
        """Sorted set: domain -> the last time any node answered a lookup for it."""
        return f"{self.base}:refresh:used"

    # --- nodes ---------------------------------------------------------------------------------

    @property
    def nodes(self) -> str:
        """Hash node name -> JSON heartbeat (last seen, breaker state, queue depth, snapshots)."""
        return f"{self.base}:nodes"

    # --- TLS-RPT across the fleet -------------------------------------------------------------

    def snapshot(self, day: str) -> str:
        """Hash node name -> that node's counts of one UTC day (JSON), replaced on re-upload."""
        return f"{self.base}:tlsrpt:snapshot:{day}"

    def snapshot_status(self, day: str) -> str:
        """Hash node name -> "final" or "open": whether its snapshot of the day was uploaded
        after the day ended (written with the snapshot, in one transaction; small, so the
        report sender reads it on every pass while it waits for the nodes)."""
        return f"{self.base}:tlsrpt:snapshot-status:{day}"

    def report_inputs(self, day: str) -> str:
        """The snapshots of one day as the fleet's report uses them: a copy of snapshot:DAY
        made once (when every node is in, or at the deadline); later uploads do not change it."""
        return f"{self.base}:tlsrpt:inputs:{day}"

    def report_lease(self, day: str, domain: str, record_digest: str) -> str:
        """Held by the one node sending a (day, domain, record) report; value: fencing token."""
        return f"{self.base}:tlsrpt:lease:{day}:{domain}:{record_digest}"

    def report_state(self, day: str) -> str:
        """Hash "DOMAIN RECORD_DIGEST" -> JSON state of that report (sent, token, report id)."""
        return f"{self.base}:tlsrpt:state:{day}"

    @property
    def fencing(self) -> str:
        """Counter: every report lease takes the next token; a stale holder's write is refused."""
        return f"{self.base}:tlsrpt:fence"
