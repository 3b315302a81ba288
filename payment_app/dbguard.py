"""Keeps persistent SQLite connections on the database file the settings name.

Connected in PaymentAppConfig.ready(): Django signals, not business logic.
"""

import logging
import os

from django.db import connections

logger = logging.getLogger(__name__)


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
