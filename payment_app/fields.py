"""Strict serializer fields for the charge API.

DRF's stock fields coerce ("1" -> 1, true -> 1, 1e2 -> 100, 0.1 as float). A payment API
should not guess: each field takes exactly the JSON type the contract names.
"""

from decimal import Decimal

import pycountry
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from payment_app.models import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX
from payment_app.parsers import ExponentDecimal

ISO_4217_CODES = frozenset(currency.alpha_3 for currency in pycountry.currencies)
CENT = Decimal(1).scaleb(-AMOUNT_DECIMAL_PLACES)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not a string, not a boolean, not a number with a fraction."""

    default_error_messages = {
        "invalid": "Must be a JSON integer such as 1 (not a string, boolean or fraction).",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


# OpenAPI 3.0 spelling: exclusiveMinimum is a boolean beside minimum (a number only in 3.1).
@extend_schema_field(
    {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": float(AMOUNT_MAX),
        "multipleOf": float(CENT),
        "example": 301.99,
    }
)
class AmountField(serializers.Field):
    """A positive JSON number with at most two decimal places, kept exact as a Decimal.

    Stock Antaeus writes 301.99, 120.5 or 100. Exponent notation, strings, booleans,
    NaN/Infinity and more than two decimals are refused, not rounded.
    """

    default_error_messages = {
        "invalid": "Must be a JSON number such as 301.99 (not a string or boolean).",
        "exponent": "Write the amount as a plain decimal such as 100 or 120.5, not in exponent notation.",
        "places": f"At most {AMOUNT_DECIMAL_PLACES} decimal places.",
        "min": "Must be greater than 0.",
        "max": f"Must be at most {AMOUNT_MAX}.",
    }

    def to_internal_value(self, data):
        if isinstance(data, ExponentDecimal):
            self.fail("exponent")
        if isinstance(data, bool) or not isinstance(data, (int, Decimal)):
            self.fail("invalid")
        value = Decimal(data)
        if not value.is_finite():
            self.fail("invalid")
        if value <= 0:
            self.fail("min")
        if value > AMOUNT_MAX:
            self.fail("max")
        if value != value.quantize(CENT):
            self.fail("places")
        return value.quantize(CENT)


@extend_schema_field(
    {
        # The codes the server takes, not just any three letters, so a generated client
        # or a fuzzer knows which codes are currencies. `null` sits in the object branch:
        # in OpenAPI 3.0 `nullable` only widens a schema that has a `type`.
        "oneOf": [
            {"type": "string", "enum": sorted(ISO_4217_CODES), "example": "EUR"},
            {
                "type": "object",
                "maxProperties": 0,
                "nullable": True,
                "description": "unknown: {} (what stock Antaeus sends) or null",
            },
        ],
        "description": "ISO 4217 code; {}, null or absent when unknown",
    }
)
class CurrencyField(serializers.Field):
    """An ISO 4217 code such as "EUR"; `{}`, null or absent (stock Antaeus) mean unknown, ""."""

    default_error_messages = {
        "invalid": 'Must be an ISO 4217 code string such as "EUR", or {{}} / null when unknown.',
        "unknown": "{value!r} is not an ISO 4217 currency code (codes are three upper-case letters, e.g. EUR).",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def get_default(self):
        # Absent means unknown. Not a declared `default`: the schema would publish "" as
        # the default, a value its own oneOf refuses.
        if getattr(self.root, "partial", False):
            return super().get_default()
        return ""

    def validate_empty_values(self, data):
        if data is None:
            return True, ""
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if isinstance(data, dict) and not data:
            return ""
        if not isinstance(data, str):
            self.fail("invalid")
        if data not in ISO_4217_CODES:
            self.fail("unknown", value=data[:16])
        return data
