"""Reads."""

import datetime
from dataclasses import dataclass

from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import TruncDay, TruncHour, TruncMonth, TruncWeek

from payment_app.models import ChargeAttempt


def charge_attempt_success_share(*, attempts: QuerySet[ChargeAttempt]) -> tuple[int, int]:
    """(succeeded, total) over the given attempts, in one query."""
    counts = attempts.order_by().aggregate(
        total=Count("id"), succeeded=Count("id", filter=Q(succeeded=True))
    )
    return counts["succeeded"], counts["total"]


@dataclass(frozen=True)
class SuccessSharePoint:
    start: datetime.datetime
    succeeded: int
    total: int

    @property
    def share(self) -> float:
        return self.succeeded / self.total


# The coarsest step that still shows the listed span in at most MAX_POINTS points.
_STEPS = (
    (datetime.timedelta(hours=1), TruncHour),
    (datetime.timedelta(days=1), TruncDay),
    (datetime.timedelta(weeks=1), TruncWeek),
    (datetime.timedelta(days=31), TruncMonth),
)
MAX_POINTS = 60


def charge_attempt_success_share_over_time(
    *, attempts: QuerySet[ChargeAttempt]
) -> tuple[datetime.timedelta | None, list[SuccessSharePoint]]:
    """(step, points): the success share of the given attempts per hour, day, week or
    month, whichever keeps the span in MAX_POINTS points; one grouped query (two with the
    span). Steps without attempts are left out, not drawn as zero."""
    attempts = attempts.order_by()
    span = attempts.aggregate(first=Min("created_at"), last=Max("created_at"))
    if span["first"] is None:
        return None, []
    length = span["last"] - span["first"]
    step, trunc = next(((s, t) for s, t in _STEPS if length <= s * (MAX_POINTS - 1)), _STEPS[-1])
    rows = (
        attempts.annotate(start=trunc("created_at", tzinfo=datetime.timezone.utc))
        .values("start")
        .annotate(total=Count("id"), succeeded=Count("id", filter=Q(succeeded=True)))
        .order_by("start")
    )
    return step, [SuccessSharePoint(row["start"], row["succeeded"], row["total"]) for row in rows]
