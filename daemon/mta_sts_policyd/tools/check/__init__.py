"""Operator checks of one's own domains: findings (pure model and rules), observations
gathered from DNS, HTTPS and SMTP, and the runner. See docs/check-findings.md."""
