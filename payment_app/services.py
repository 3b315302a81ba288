"""Writes. The charge itself: decide the outcome and record the attempt, atomically."""

import hashlib
import logging
import random
import threading
import time
from decimal import Decimal

from django.conf import settings
from django.db import transaction

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

    The transaction starts with BEGIN IMMEDIATE (settings), which takes SQLite's write
    lock first, so two requests with one key are serialised and only one inserts.
    """
    started = time.perf_counter()
    fingerprint = _fingerprint(customer_id=customer_id, amount=amount, currency=currency)
    with transaction.atomic():
        if idempotency_key is not None:
            earlier = ChargeAttempt.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                if earlier.request_fingerprint != fingerprint:
                    raise IdempotencyKeyReused()
                return earlier, False
        attempt = ChargeAttempt.objects.create(
            customer_id=customer_id,
            amount=amount,
            currency=currency,
            succeeded=_charge_outcome(),
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
        )
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
