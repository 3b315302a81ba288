"""The readiness checks and the /readyz view.

/readyz is unauthenticated (the kubelet probes it), so its answer names each check and
a fixed reason, never an exception's text (a host, a port, a path); the details go to
the log, once per change of state, not on every probe.
"""

import asyncio
import dataclasses
import logging
import sqlite3
import threading
from pathlib import Path

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from payment_app import metrics

logger = logging.getLogger(__name__)


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
            raise ServiceUnavailable("cannot query the database") from exc
        if in_recovery or read_only == "on":
            raise ServiceUnavailable("the database is read-only (a standby, or read-only mode)")

    def _run_sqlite(self, connection):
        name = str(connection.settings_dict["NAME"])
        # mode=rw: a missing file is an error here, not a new empty database.
        uri = name if name.startswith("file:") else f"{Path(name).resolve().as_uri()}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.lock_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise ServiceUnavailable("cannot open the database") from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ServiceUnavailable("cannot write to the database") from exc
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
            raise ServiceUnavailable("cannot read the migration state") from exc
        finally:
            connection.close()
        if plan:
            raise ServiceUnavailable(f"{len(plan)} migration(s) not applied")


def _detail(error) -> str:
    """A failed check for the log: its reason and the exception behind it (host, port and
    driver message included; the log is not public, and no driver message quotes a password)."""
    cause = error.__cause__
    if cause is None:
        return str(error)
    first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{error} ({type(cause).__name__}: {first_line})"


class _ReadinessState:
    """This worker's last readiness answer, so a change is logged once and a steady state
    never (the kubelet probes every few seconds)."""

    def __init__(self):
        self.ready: bool | None = None
        self._lock = threading.Lock()

    def record(self, results) -> bool:
        failed = [result for result in results if result.error]
        ready = not failed
        with self._lock:
            changed, self.ready = ready != self.ready, ready
        if changed and not ready:
            logger.warning("not ready: %s", "; ".join(
                f"{type(result.check).__name__}: {_detail(result.error)}" for result in failed))
        elif changed and ready:
            logger.info("ready")
        return ready


STATE = _ReadinessState()


class ReadinessView(HealthCheckView):
    """django-health-check's checks and headers (no caching, Vary: Accept), answered as
    JSON in every case: 200 when every check passes, else 503 (Service Unavailable, what
    a not-ready pod is; not 500, a server bug). Each answer is also the `payment_ready`
    metric."""

    async def get(self, request, *args, **kwargs):
        with self.get_executor() as executor:
            self.results = await asyncio.gather(*(check.get_result(executor) for check in self.get_checks()))
        ready = STATE.record(self.results)
        metrics.readiness(ready)
        # str(error) is the check's own fixed reason ("Unavailable: cannot query the database").
        body = {type(result.check).__name__: str(result.error) if result.error else "OK" for result in self.results}
        return JsonResponse(body, status=200 if ready else 503)
