"""TLS reports others send about the operator's own domains (RFC 8460, receiving side).

Intake (mail on stdin, a Maildir, an HTTPS body), a tolerant parser, an idempotent SQLite
store, the per-day summary and the `enforce` readiness verdict. Pure: model, parse, unpack,
summary, readiness, chart. Imports `tlsrpt.normalize` (one naming rule for both directions) and
`sts`; never `service` or `cli`.
"""
