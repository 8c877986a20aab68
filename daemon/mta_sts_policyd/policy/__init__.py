"""The policy cache and the resolver behind every socketmap answer (RFC 8461 §3.3, §5.1):
answer path, background refresh, reply memo, the in-memory hot set and the persistent store.

Imports: `discovery` (through the `DiscoveryLike` protocol), `postfix` pure rendering,
`sts`, `errors`.
"""
