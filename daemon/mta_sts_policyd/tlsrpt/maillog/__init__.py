"""Postfix < 3.10 outcomes: TLS sessions read from the mail log (file or journal)."""
