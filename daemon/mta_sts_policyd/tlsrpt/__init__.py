"""RFC 8460 TLS reporting: collect outcomes, aggregate per UTC day, build and deliver reports.

Imports: `policy` (cache entries, for the testing-mode shadow), `probe`, `net`, `sts`,
`metrics`, `errors`. Never `service`, `tools` or `cli`; never reads the configuration.
"""
