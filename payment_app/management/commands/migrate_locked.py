"""`manage.py migrate` that any number of processes may run at once.

Several payment pods start together on PostgreSQL; Django's migrate is not safe to run
concurrently (two runners race to create the same tables). Each runner here first takes
a PostgreSQL session-level advisory lock, so one migrates while the others wait, then
find nothing left to do. The server releases the lock if a runner dies. On SQLite,
migrations already take the database's write lock: plain migrate.
"""

import time

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

# An arbitrary application-wide key: every runner of this project's migrations uses it.
MIGRATION_LOCK_KEY = 7_140_520_101


class Command(BaseCommand):
    help = "Apply migrations, one runner at a time across processes and pods (PostgreSQL advisory lock)."

    def add_arguments(self, parser):
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument(
            "--lock-timeout", type=float, default=600.0,
            help="seconds to wait for another runner to finish (default 600)",
        )

    def handle(self, *args, database, lock_timeout, interactive, verbosity, **options):
        connection = connections[database]
        if connection.vendor != "postgresql":
            call_command("migrate", database=database, interactive=interactive, verbosity=verbosity)
            return
        with connection.cursor() as cursor:
            # Migrations may take longer than a charge's statement timeout.
            cursor.execute("SET statement_timeout = 0")
            self._lock(cursor, lock_timeout, verbosity)
            try:
                call_command("migrate", database=database, interactive=interactive, verbosity=verbosity)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])

    def _lock(self, cursor, timeout: float, verbosity: int) -> None:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
            if cursor.fetchone()[0]:
                return
            if time.monotonic() >= deadline:
                raise CommandError(f"another migration runner held the lock for over {timeout:g} s")
            if not told and verbosity:
                self.stdout.write("Waiting for another migration runner to finish...")
                told = True
            time.sleep(0.5)
