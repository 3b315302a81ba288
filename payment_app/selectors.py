"""Reads."""

from django.db.models import Count, Q, QuerySet

from payment_app.models import ChargeAttempt


def charge_attempt_success_share(*, attempts: QuerySet[ChargeAttempt]) -> tuple[int, int]:
    """(succeeded, total) over the given attempts, in one query."""
    counts = attempts.order_by().aggregate(
        total=Count("id"), succeeded=Count("id", filter=Q(succeeded=True))
    )
    return counts["succeeded"], counts["total"]
