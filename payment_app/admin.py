"""Charge attempts in the admin: an audit record, so read-only."""

import datetime

from django.conf import settings
from django.contrib import admin

from payment_app.models import ChargeAttempt
from payment_app.selectors import (
    SuccessSharePoint,
    charge_attempt_success_share,
    charge_attempt_success_share_over_time,
)

# The success-share chart: an inline SVG drawn here (no script, no CDN), in viewBox units.
CHART_WIDTH, CHART_HEIGHT = 720, 180
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 44, 12, 10, 26
_STEP_NAMES = {
    datetime.timedelta(hours=1): "hour",
    datetime.timedelta(days=1): "day",
    datetime.timedelta(weeks=1): "week",
    datetime.timedelta(days=31): "month",
}


def success_share_chart(
    step: datetime.timedelta | None, points: list[SuccessSharePoint], rate: float
) -> dict | None:
    """Coordinates for the admin's chart: one dot per step (share of that step's attempts),
    joined by a line, against a dashed line at the configured PAYMENT_SUCCESS_RATE."""
    if not points:
        return None
    plot_width = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    first, last = points[0].start, points[-1].start
    span = (last - first).total_seconds()

    def x(start: datetime.datetime) -> float:
        return round(CHART_LEFT + (plot_width * (start - first).total_seconds() / span if span else plot_width / 2), 1)

    def y(share: float) -> float:
        return round(CHART_TOP + plot_height * (1 - share), 1)

    fmt = "%Y-%m-%d %H:%M" if step < datetime.timedelta(days=1) else "%Y-%m-%d"
    dots = [
        {
            "x": x(p.start),
            "y": y(p.share),
            "label": f"{p.start:{fmt}}: {p.succeeded} of {p.total} charged ({100 * p.share:.1f}%)",
            "share": round(p.share, 4),
            "total": p.total,
        }
        for p in points
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "step": _STEP_NAMES.get(step, "period"),
        "dots": dots,
        "line": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "rate": {"y": y(rate), "percent": round(100 * rate, 1)},
        "grid": [{"y": y(share), "label": f"{share:.0%}"} for share in (0, 0.5, 1)],
        "left": CHART_LEFT,
        "right": CHART_WIDTH - CHART_RIGHT,
        "bottom": CHART_HEIGHT - CHART_BOTTOM,
        "first": f"{first:{fmt}}",
        "last": f"{last:{fmt}}",
    }


UNKNOWN_CURRENCY = "unknown"


class CurrencyListFilter(admin.AllValuesFieldListFilter):
    """"By currency", with the unknown currency (stored empty: what stock Antaeus sends)
    labelled as the list column shows it, not as an invisible empty entry."""

    def choices(self, changelist):
        for choice in super().choices(changelist):
            if choice["display"] == "":
                choice = {**choice, "display": UNKNOWN_CURRENCY}
            yield choice


@admin.register(ChargeAttempt)
class ChargeAttemptAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "customer_id", "amount", "currency_display", "succeeded"]
    list_filter = ["succeeded", ("currency", CurrencyListFilter), ("created_at", admin.DateFieldListFilter)]
    date_hierarchy = "created_at"
    # "=" is an exact match: ids and customer numbers are not substrings.
    search_fields = ["=id", "=customer_id", "=idempotency_key"]
    search_help_text = "Attempt id, customer id or Idempotency-Key (exact)."
    list_per_page = 100
    show_full_result_count = False

    @admin.display(description="currency", ordering="currency")
    def currency_display(self, obj: ChargeAttempt) -> str:
        return obj.currency or UNKNOWN_CURRENCY

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            succeeded, total = charge_attempt_success_share(attempts=changelist.queryset)
            response.context_data["success_share"] = {
                "succeeded": succeeded,
                "total": total,
                "percent": round(100 * succeeded / total, 1) if total else None,
            }
            step, points = charge_attempt_success_share_over_time(attempts=changelist.queryset)
            response.context_data["success_share_chart"] = success_share_chart(
                step, points, settings.PAYMENT_SUCCESS_RATE
            )
        return response
