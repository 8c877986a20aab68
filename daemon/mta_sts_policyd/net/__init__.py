"""Network plumbing shared by every part: DNS transport and client, the HTTPS stream, unix
sockets, systemd socket activation and notify.

Imports: `errors`, `sts` (pure names). Knows nothing of MTA-STS policy semantics.
"""
