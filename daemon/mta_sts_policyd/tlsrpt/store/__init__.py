"""Daily TLS-RPT aggregates and the report delivery ledger, in one SQLite file."""
