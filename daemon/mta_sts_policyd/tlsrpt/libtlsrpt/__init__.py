"""Postfix >= 3.10 outcomes: libtlsrpt datagrams received, parsed and quarantined."""
