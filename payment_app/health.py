"""Readiness checks beyond django-health-check's own Database check."""

import dataclasses
import sqlite3
from pathlib import Path

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from payment_app import metrics


@dataclasses.dataclass
class DatabaseWritable(HealthCheck):
    """The database would take a charge now.

    SQLite: the file takes the write lock within `lock_timeout` seconds and a commit.
    Fails when the file or its directory is missing, read-only, or held locked by
    another process: every case in which a charge could not be recorded. Taking the
    lock alone is not enough: in WAL mode it lives in the -shm index, and SQLite hands
    a new connection a file descriptor the process already holds open for writing, so
    an unwritable database and WAL only show at commit. The probe commits a write that
    changes nothing (user_version set to itself): one WAL frame per probe.
    """

    alias: str = DEFAULT_DB_ALIAS
    lock_timeout: float = 1.0

    def run(self):
        connection = connections[self.alias]
        if connection.vendor == "postgresql":
            self._run_postgresql(connection)
        else:
            self._run_sqlite(connection)

    def _run_postgresql(self, connection):
        """Connected to a primary that accepts writes: after a failover an old connection
        may reach a demoted instance, which answers SELECT 1 but refuses every INSERT."""
        try:
            with connection.temporary_connection() as cursor:
                cursor.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
                in_recovery, read_only = cursor.fetchone()
        except DatabaseError as exc:
            raise ServiceUnavailable(f"cannot query the database ({type(exc).__name__})") from exc
        if in_recovery or read_only == "on":
            raise ServiceUnavailable("the database is read-only (a standby, or read-only mode)")

    def _run_sqlite(self, connection):
        name = str(connection.settings_dict["NAME"])
        # mode=rw: a missing file is an error here, not a new empty database.
        uri = name if name.startswith("file:") else f"{Path(name).resolve().as_uri()}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.lock_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise ServiceUnavailable(f"cannot open the database: {exc}") from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ServiceUnavailable(f"cannot write to the database: {exc}") from exc
        finally:
            conn.close()


@dataclasses.dataclass
class MigrationsApplied(HealthCheck):
    """Every migration is applied: a pod is not ready on an old schema."""

    alias: str = DEFAULT_DB_ALIAS

    def run(self):
        connection = connections[self.alias]
        try:
            executor = MigrationExecutor(connection)
            plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        except Exception as exc:
            raise ServiceUnavailable(f"cannot read the migration state: {exc}") from exc
        finally:
            connection.close()
        if plan:
            raise ServiceUnavailable(f"{len(plan)} migration(s) not applied")


class ReadinessView(HealthCheckView):
    """django-health-check's view, recording each answer in the `payment_ready` metric."""

    async def get(self, request, *args, **kwargs):
        response = await super().get(request, *args, **kwargs)
        metrics.readiness(not any(result.error for result in self.results))
        return response
