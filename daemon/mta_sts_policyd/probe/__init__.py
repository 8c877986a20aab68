"""SMTP STARTTLS probe of an MX host, judged by RFC 8461 §4 and classified by RFC 8460 §4.3.

Imports: `net`, `sts`, `errors`. Knows nothing of TLS reporting: `tlsrpt` turns its verdicts
into RFC 8460 failure details.
"""
