"""Loopback servers shared by unit, integration tests and benchmarks.

Import as `support.<module>` from tests (pytest puts tests/ on sys.path via the root conftest),
or as `tests.support.<module>` from the repository root (benchmarks).
- dns_server.DnsServer: recursive-resolver-like DNS on 127.0.0.1 (UDP+TCP, thread).
- https_server.HttpsServer: policy hosts over HTTPS with trustme certificates (thread).
- certs.CertFactory: good and deliberately broken leaf certificates.
"""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
"""tests/: fixtures/, golden/ and schema/ live here, whichever folder a test module is in."""
REPO_ROOT = TESTS_DIR.parent
