"""Charge attempts in the admin: an audit record, so read-only."""

from django.contrib import admin

from payment_app.models import ChargeAttempt
from payment_app.selectors import charge_attempt_success_share


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
        return response
