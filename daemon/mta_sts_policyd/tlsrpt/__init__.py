"""RFC 8460 TLS reporting: collect outcomes, aggregate per UTC day, build and deliver reports."""
