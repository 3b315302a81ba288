"""Writes. The charge itself: decide the outcome and record the attempt, atomically."""

import hashlib
import logging
import random
import threading
import time
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from payment_app.errors import IdempotencyKeyReused
from payment_app.models import ChargeAttempt
from payment_app.sqlite import write_turn

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


def _fingerprint(*, customer_id: int, amount: Decimal, currency: str) -> str:
    canonical = f"{customer_id}|{amount:f}|{currency}"
    return hashlib.sha256(canonical.encode()).hexdigest()


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

    Without a key the attempt is one INSERT in autocommit mode: committed (and synced)
    before create() returns. With a key, the database's unique constraint decides which
    of several concurrent requests stores its attempt, across processes and pods.
    """
    started = time.perf_counter()
    fingerprint = _fingerprint(customer_id=customer_id, amount=amount, currency=currency)
    fields = dict(customer_id=customer_id, amount=amount, currency=currency, request_fingerprint=fingerprint)
    with write_turn(connection):
        if idempotency_key is None:
            attempt = ChargeAttempt.objects.create(**fields, succeeded=_charge_outcome())
        else:
            attempt, created = _charge_attempt_create_keyed(fields=fields, idempotency_key=idempotency_key)
            if not created:
                return attempt, False
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


def _charge_attempt_create_keyed(*, fields: dict, idempotency_key: str) -> tuple[ChargeAttempt, bool]:
    try:
        with transaction.atomic():
            earlier = ChargeAttempt.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is None:
                attempt = ChargeAttempt.objects.create(
                    **fields, idempotency_key=idempotency_key, succeeded=_charge_outcome()
                )
                return attempt, True
    except IntegrityError:
        # A concurrent request with the same key committed first (PostgreSQL makes this
        # INSERT wait for it, then refuses it); answer as a repeat of that one.
        earlier = ChargeAttempt.objects.filter(idempotency_key=idempotency_key).first()
        if earlier is None:
            raise
    if earlier.request_fingerprint != fields["request_fingerprint"]:
        raise IdempotencyKeyReused()
    return earlier, False
