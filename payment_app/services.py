"""Writes. The charge itself: decide the outcome and record the attempt, atomically."""

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import threading
import time
from decimal import Decimal

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.sql import InsertQuery

from payment_app.errors import IdempotencyKeyReused
from payment_app.models import ChargeAttempt

logger = logging.getLogger(__name__)

_rng_lock = threading.Lock()
_rng: random.Random | None = None


def outcome_rng_reset() -> None:
    """Forget the outcome generator; the next charge seeds a new one from the settings.

    PAYMENT_RANDOM_SEED makes each process's sequence reproducible (every gunicorn
    worker has its own generator, so with several workers each repeats the sequence).
    """
    global _rng
    with _rng_lock:
        _rng = None


def _charge_outcome() -> bool:
    global _rng
    with _rng_lock:
        if _rng is None:
            _rng = random.Random(settings.PAYMENT_RANDOM_SEED)
        # random() is in [0, 1): a rate of 0 never succeeds and a rate of 1 always does.
        return _rng.random() < settings.PAYMENT_SUCCESS_RATE


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
def _write_turn(connection: BaseDatabaseWrapper):
    """Wait for the other writers in a kernel queue, then write.

    SQLite's own wait for its write lock (the busy timeout) polls with sleeps that grow
    to 100 ms, so under concurrent charges a writer could lose the race again and again:
    p99 latency of hundreds of ms (docs/performance.md). flock() wakes the next waiter as
    soon as the lock is released, and the kernel drops the lock of a process that dies.
    SQLite's lock is still taken as before (BEGIN IMMEDIATE): this only orders our own
    writers. A writer that waited here leaves itself only the rest of the busy timeout for
    SQLite's lock, so when something else holds the database a queue of charges still
    fails within about SQLITE_BUSY_TIMEOUT_SECONDS each, not one after another.
    """
    fd = _queue_fd(connection)
    if fd is None:
        yield
        return
    arrived = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        waited = time.monotonic() - arrived
        timeout = settings.SQLITE_BUSY_TIMEOUT_SECONDS
        if waited > 0.05 * timeout:
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA busy_timeout = {int(max(timeout - waited, 0) * 1000)}")
            try:
                yield
            finally:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                except DatabaseError:
                    connection.close()  # the next request opens a fresh one, with the full timeout
        else:
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _fingerprint(*, customer_id: int, amount: Decimal, currency: str) -> str:
    canonical = f"{customer_id}|{amount:f}|{currency}"
    return hashlib.sha256(canonical.encode()).hexdigest()


# The columns a new attempt's INSERT writes: every one but the auto-increment id.
_INSERT_FIELDS = [field for field in ChargeAttempt._meta.local_concrete_fields if not field.primary_key]


def _new_attempt(
    connection: BaseDatabaseWrapper,
    *,
    customer_id: int,
    amount: Decimal,
    currency: str,
    fingerprint: str,
    idempotency_key: str | None,
) -> tuple[ChargeAttempt, tuple[str, tuple]]:
    """An unsaved attempt with its outcome drawn, and the INSERT that stores it.

    The INSERT is compiled by Django's own compiler (InsertQuery, as QuerySet.create()
    uses it, minus RETURNING), so the SQL and the adapted values are the ORM's. It is
    compiled here, before the write turn: under concurrent charges the time spent
    between taking the write lock and releasing it bounds the throughput of every
    worker together, and the transaction's BEGIN and COMMIT statements with the ORM's
    model and SQL construction were two fifths of it (docs/performance.md). No
    pre_save/post_save signals are sent; nothing listens.
    """
    attempt = ChargeAttempt(
        customer_id=customer_id,
        amount=amount,
        currency=currency,
        succeeded=_charge_outcome(),
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
    )
    query = InsertQuery(ChargeAttempt)
    query.insert_values(_INSERT_FIELDS, [attempt])
    ((sql, params),) = query.get_compiler(connection=connection).as_sql()
    return attempt, (sql, tuple(params))


def _store(connection: BaseDatabaseWrapper, cursor, attempt: ChargeAttempt, statement: tuple[str, tuple]) -> None:
    cursor.execute(*statement)
    attempt.pk = cursor.lastrowid
    attempt._state.adding = False  # as Model.save() leaves it: a stored row
    attempt._state.db = connection.alias


def charge_attempt_create(
    *,
    customer_id: int,
    amount: Decimal,
    currency: str = "",
    idempotency_key: str | None = None,
) -> tuple[ChargeAttempt, bool]:
    """Charge a customer: draw the outcome and store the attempt before anyone is told.

    Returns the attempt and whether it was created now (False: an earlier attempt with
    the same Idempotency-Key and parameters, replayed). The same key with other
    parameters raises IdempotencyKeyReused and stores nothing.

    Without a key, the attempt is one INSERT in autocommit mode: SQLite commits it (and
    syncs the WAL) before execute() returns, so the row is durable before anyone is told,
    and the write lock is held for that statement only. With a key, the lookup and the
    INSERT share one transaction that starts with BEGIN IMMEDIATE (settings), which
    takes SQLite's write lock first, so two requests with one key are serialised and
    only one inserts. (Called inside an outer atomic block, both join that transaction.)
    """
    started = time.perf_counter()
    fingerprint = _fingerprint(customer_id=customer_id, amount=amount, currency=currency)
    # This thread's connection itself: each attribute read through the django.db.connection
    # proxy is a thread-local lookup, and the INSERT compiler makes dozens.
    db = connections[DEFAULT_DB_ALIAS]
    fields = dict(customer_id=customer_id, amount=amount, currency=currency, fingerprint=fingerprint)
    if idempotency_key is None:
        attempt, statement = _new_attempt(db, **fields, idempotency_key=None)
        with db.cursor() as cursor, _write_turn(db):
            _store(db, cursor, attempt, statement)
    else:
        with _write_turn(db), transaction.atomic(using=db.alias):
            earlier = ChargeAttempt.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                if earlier.request_fingerprint != fingerprint:
                    raise IdempotencyKeyReused()
                return earlier, False
            attempt, statement = _new_attempt(db, **fields, idempotency_key=idempotency_key)
            with db.cursor() as cursor:
                _store(db, cursor, attempt, statement)
    logger.info(
        "charge attempt",
        extra={
            "attempt_id": attempt.pk,
            "result": attempt.succeeded,
            "customer_id": attempt.customer_id,
            "amount": f"{attempt.amount:f}",
            "currency": attempt.currency or None,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )
    return attempt, True
