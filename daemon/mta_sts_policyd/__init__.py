"""mta-sts-policyd: MTA-STS (RFC 8461) policy daemon and TLS reporter (RFC 8460) for Postfix."""

__version__ = "0.1.0"
