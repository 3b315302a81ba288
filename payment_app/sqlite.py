"""SQLite-only machinery, behind one seam: `write_turn()` (a no-op on other backends) and
the signal handlers that keep persistent connections on the right file.

Nothing here runs on PostgreSQL, where the server orders concurrent writers itself.
"""

import contextlib
import fcntl
import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

# --- The write queue ----------------------------------------------------------------------

_writer = threading.local()


def _queue_fd(connection: BaseDatabaseWrapper) -> int | None:
    """This thread's descriptor on the database's lock file (None: in-memory database).

    One open file description per thread, so flock() queues threads of one worker
    against each other as well as against the other workers.
    """
    name = str(connection.settings_dict["NAME"])
    if getattr(_writer, "name", None) != name:
        if getattr(_writer, "fd", None) is not None:
            os.close(_writer.fd)
        _writer.name, _writer.fd = name, None
        if name and name != ":memory:" and "mode=memory" not in name and not name.startswith("file:"):
            try:
                _writer.fd = os.open(f"{name}.writer-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                logger.warning("no write queue: cannot open %s.writer-lock", name)
    return _writer.fd


@contextlib.contextmanager
def write_turn(connection: BaseDatabaseWrapper):
    """On SQLite, wait for the other writers in a kernel queue, then write.

    SQLite's own wait for its write lock (the busy timeout) polls with sleeps that grow
    to 100 ms, so under concurrent charges a writer could lose the race again and again
    (docs/performance.md). flock() wakes the next waiter as soon as the lock is released,
    and the kernel drops the lock of a process that dies. SQLite's lock is still taken as
    before: this only orders our own writers. A writer that waited here gets only the
    rest of the busy timeout for SQLite's lock, so when something else holds the
    database a queue of charges fails within about SQLITE_BUSY_TIMEOUT_SECONDS each.
    """
    fd = _queue_fd(connection) if connection.vendor == "sqlite" else None
    if fd is None:
        yield
        return
    arrived = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        waited = time.monotonic() - arrived
        timeout = settings.SQLITE_BUSY_TIMEOUT_SECONDS
        if waited > 0.05 * timeout:
            with _busy_timeout(connection, max(timeout - waited, 0), restore=timeout):
                yield
        else:
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def _busy_timeout(connection: BaseDatabaseWrapper, seconds: float, *, restore: float):
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA busy_timeout = {int(restore * 1000)}")
        except DatabaseError:
            connection.close()  # the next request opens a fresh one, with the full timeout


# --- Persistent connections stay on the file the settings name ------------------------------
# Connected in PaymentAppConfig.ready().


def _file_identity(name) -> tuple[int, int] | None:
    try:
        stat = os.stat(name)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def remember_database_file(sender, connection, **kwargs):
    if connection.vendor == "sqlite":
        connection.payment_database_file = _file_identity(connection.settings_dict["NAME"])


def drop_connections_to_moved_database(**kwargs):
    """Close this thread's connections whose database file is gone or was replaced.

    An open SQLite connection in WAL mode keeps writing into a file that was deleted,
    moved or whose directory vanished, and reports success: charges acknowledged into
    a file nobody will read again. So at the start of each request a persistent
    connection is checked against the path (one stat call) and dropped on a mismatch;
    the request then reopens the path, and fails with a storage error (503) while the
    file is missing, or works again once it is back.
    """
    for connection in connections.all(initialized_only=True):
        if connection.vendor != "sqlite" or connection.connection is None:
            continue
        current = _file_identity(connection.settings_dict["NAME"])
        if current != getattr(connection, "payment_database_file", current):
            logger.warning(
                "database file moved or missing; reopening", extra={"database": str(connection.settings_dict["NAME"])}
            )
            connection.close()
