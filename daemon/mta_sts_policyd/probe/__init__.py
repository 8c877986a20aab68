"""SMTP STARTTLS probe of an MX host, judged by RFC 8461 §4 and classified by RFC 8460 §4.3.

Imports: `net`, `sts`, `tlsrpt.model`, `errors`.
"""
