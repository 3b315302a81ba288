"""Charge attempts: the audit record of every charge request the service accepted."""

from decimal import Decimal

from django.db import models
from django.utils import timezone

# Bounds the API enforces, and the column types that hold them.
AMOUNT_MAX_DIGITS = 11
AMOUNT_DECIMAL_PLACES = 2
AMOUNT_MAX = Decimal("999999999.99")
CUSTOMER_ID_MAX = 2**63 - 1  # SQLite's INTEGER, and Django's PositiveBigIntegerField
IDEMPOTENCY_KEY_MAX_LENGTH = 255


class ChargeAttempt(models.Model):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    customer_id = models.PositiveBigIntegerField(db_index=True)
    amount = models.DecimalField(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES)
    # ISO 4217 code; empty when the caller did not say (stock Antaeus sends "currency": {}).
    currency = models.CharField(max_length=3, blank=True, default="", db_index=True)
    succeeded = models.BooleanField()
    idempotency_key = models.CharField(
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH, null=True, blank=True, unique=True
    )
    # SHA-256 of the validated parameters, to refuse an Idempotency-Key reused for another charge.
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="charge_amount_positive"),
            models.CheckConstraint(condition=models.Q(customer_id__gt=0), name="charge_customer_positive"),
        ]

    def __str__(self) -> str:
        outcome = "charged" if self.succeeded else "declined"
        return f"#{self.pk} customer {self.customer_id} {self.amount} {self.currency or '?'} {outcome}"
