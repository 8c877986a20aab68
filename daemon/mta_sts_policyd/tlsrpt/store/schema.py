"""The TLS-RPT store's file format: tables, schema version and the two aggregating upserts.

One SQLite file holds the daily aggregates (agg, detail) and the delivery ledger (job,
destination; ledger.py), so sending and counting share one truth. Kept apart from the store's
threading and queries so the format is read in one place.
"""

SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agg(
    id INTEGER PRIMARY KEY, day TEXT NOT NULL, domain TEXT NOT NULL, record TEXT NOT NULL,
    policy TEXT NOT NULL, successes INTEGER NOT NULL, failures INTEGER NOT NULL,
    UNIQUE(day, domain, record, policy));
CREATE TABLE IF NOT EXISTS detail(
    agg_id INTEGER NOT NULL, detail TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY(agg_id, detail));
CREATE TABLE IF NOT EXISTS job(
    day TEXT NOT NULL, domain TEXT NOT NULL, record TEXT NOT NULL, report_id TEXT,
    state TEXT NOT NULL, due REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt REAL, last_error TEXT, updated REAL,
    PRIMARY KEY(day, domain, record));
CREATE TABLE IF NOT EXISTS destination(
    day TEXT NOT NULL, domain TEXT NOT NULL, record TEXT NOT NULL, destination TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated REAL,
    PRIMARY KEY(day, domain, record, destination));
"""
UPSERT_AGG = """
INSERT INTO agg(day, domain, record, policy, successes, failures) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT(day, domain, record, policy) DO UPDATE SET
    successes = successes + excluded.successes, failures = failures + excluded.failures
RETURNING id"""
UPSERT_DETAIL = """
INSERT INTO detail(agg_id, detail, count) VALUES (?, ?, ?)
ON CONFLICT(agg_id, detail) DO UPDATE SET count = count + excluded.count"""
