"""The policy host: HTTPS for `mta-sts.DOMAIN/.well-known/mta-sts.txt`, many domains at once.

A separate process (`mta-sts-policyd host`, its own systemd unit). Policies come from the
directory `generate --write` fills; certificates from files (e.g. certbot's) or from the
built-in ACME client (RFC 8555, tls-alpn-01 per RFC 8737). Imports `sts` (every served policy
passes the project's own parser), `discovery.http_rules` (the size a sender reads), `net`,
`errors`; nothing imports `host` but `service`/`cli`.
"""
