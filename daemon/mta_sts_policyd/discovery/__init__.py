"""The network side of RFC 8461: `_mta-sts` TXT and MX lookups and the HTTPS policy fetch.

Imports: `net`, `sts`, `errors`. Translates every remote failure into the `errors` tree.
"""
