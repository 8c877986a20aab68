"""RFC 8461 as pure functions: no I/O, no clock."""

from mta_sts_policyd.sts.keys import policy_domain_for_key
from mta_sts_policyd.sts.match import mx_matches, patterns_matching
from mta_sts_policyd.sts.model import (
    MAX_AGE_LIMIT,
    Mode,
    Policy,
    TxtAbsent,
    TxtInvalid,
    TxtRecord,
    TxtResult,
)
from mta_sts_policyd.sts.policy import parse_policy
from mta_sts_policyd.sts.txt import parse_txt_record, select_sts_record

__all__ = [
    "MAX_AGE_LIMIT",
    "Mode",
    "Policy",
    "TxtAbsent",
    "TxtInvalid",
    "TxtRecord",
    "TxtResult",
    "mx_matches",
    "parse_policy",
    "parse_txt_record",
    "patterns_matching",
    "policy_domain_for_key",
    "select_sts_record",
]
