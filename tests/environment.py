"""Test-only environment, loaded as a pytest plugin (`-p tests.environment`).

It runs before pytest-django reads the settings, so the suite runs with production
settings (DEBUG off) and only the values a deployment must supply filled in.
With PAYMENT_TEST_BACKEND=postgresql the Django test client's database, and every
real server the tests start, are on PostgreSQL (harness/postgres.py).
"""

import os
import tempfile

import pytest

from harness import postgres

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-any-deployment")
os.environ.setdefault("DJANGO_DEBUG", "false")
# An empty static root (whitenoise warns when the configured one does not exist).
os.environ.setdefault("STATIC_ROOT", tempfile.mkdtemp(prefix="payment-static-"))

if postgres.BACKEND not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"PAYMENT_TEST_BACKEND must be sqlite or postgresql, not {postgres.BACKEND!r}")
if postgres.BACKEND == "postgresql":
    # pytest-django creates (and drops) test_<this name> from it.
    os.environ["DATABASE_URL"] = postgres.with_database(postgres.ADMIN_URL, f"{postgres.PREFIX}django")
    # Creating and dropping the test database may outlast a charge's statement timeout.
    os.environ.setdefault("DATABASE_STATEMENT_TIMEOUT_MS", "60000")
else:
    os.environ.pop("DATABASE_URL", None)


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only(reason): the test is about SQLite itself; not run on PostgreSQL")
    config.addinivalue_line("markers", "postgresql: needs a PostgreSQL server (private or the machine's)")


def pytest_report_header(config):
    return f"payment backend: {postgres.BACKEND}"


def pytest_sessionstart(session):
    needs_postgres = postgres.BACKEND == "postgresql"
    if not needs_postgres:
        return
    if reason := postgres.unreachable_reason():
        # A clear failure, never a silent skip: `make test` promises both backends.
        pytest.exit(f"PAYMENT_TEST_BACKEND=postgresql: {reason}", returncode=3)


def pytest_collection_modifyitems(config, items):
    if postgres.BACKEND != "postgresql":
        return
    for item in items:
        if marker := item.get_closest_marker("sqlite_only"):
            why = marker.args[0] if marker.args else "about SQLite itself"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))


def pytest_sessionfinish(session, exitstatus):
    postgres.drop_databases()
