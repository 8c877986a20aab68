"""The RFC 8461 §3.2 example policy, as the parser must produce it (shared by tests)."""

from __future__ import annotations

from mta_sts_policyd.sts.model import Mode, Policy

RFC_8461_EXAMPLE_POLICY = Policy(
    mode=Mode.ENFORCE,
    max_age=604800,
    mx=("mail.example.com", "*.example.net", "backupmx.example.com"),
    lines=(
        "version: STSv1",
        "mode: enforce",
        "mx: mail.example.com",
        "mx: *.example.net",
        "mx: backupmx.example.com",
        "max_age: 604800",
    ),
)
