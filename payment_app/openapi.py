"""What the OpenAPI schema says beyond the serializers: the Idempotency-Key header's
exact form and the examples Swagger UI shows."""

from drf_spectacular.utils import OpenApiExample

from payment_app import errors
from payment_app.models import IDEMPOTENCY_KEY_MAX_LENGTH

# Printable ASCII without surrounding spaces: HTTP strips a header value's leading and
# trailing whitespace, so the server never sees them, and a key of spaces arrives empty.
IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
    "pattern": f"^[!-~](?:[ -~]{{0,{IDEMPOTENCY_KEY_MAX_LENGTH - 2}}}[!-~])?$",
}

# The examples Swagger UI shows. The first request example is what "Try it out" fills in:
# a charge the server accepts (a small customer id: JavaScript rounds large integers).
# The error examples are the bodies the server writes (tests/service/test_schema.py).
REQUEST_EXAMPLES = [
    OpenApiExample(
        "Stock Antaeus", value={"currency": {}, "customer_id": 1, "value": 301.99}, request_only=True
    ),
    OpenApiExample("With a currency code", value={"currency": "EUR", "customer_id": 2, "value": 120.5},
                   request_only=True),
]
ERROR_EXAMPLES = {
    "400": {
        "validation_error": errors.error_body(
            "validation_error",
            "customer_id: Must be a JSON integer such as 1 (not a string, boolean or fraction). "
            "value: At most 2 decimal places.",
            {
                "customer_id": ["Must be a JSON integer such as 1 (not a string, boolean or fraction)."],
                "value": ["At most 2 decimal places."],
            },
        ),
        "parse_error": errors.error_body(
            "parse_error",
            "The request body is not valid JSON: Expecting value: line 1 column 30 (char 29)",
        ),
    },
    "408": {"request_timeout": errors.error_body("request_timeout", str(errors.RequestTimeout(5).detail))},
    "411": {"length_required": errors.error_body("length_required", str(errors.LengthRequired.default_detail))},
    "413": {"payload_too_large": errors.error_body("payload_too_large", str(errors.PayloadTooLarge(4096).detail))},
    "415": {
        "unsupported_media_type": errors.error_body(
            "unsupported_media_type", 'Unsupported media type "text/plain" in request.'
        )
    },
    "422": {"idempotency_key_reused": errors.error_body(
        "idempotency_key_reused", str(errors.IdempotencyKeyReused.default_detail))},
    "503": {"storage_unavailable": errors.error_body(
        "storage_unavailable", str(errors.StorageUnavailable.default_detail))},
}
RESPONSE_EXAMPLES = [
    OpenApiExample(
        "Charged",
        value={"id": 1, "created_at": "2026-11-24T06:57:47.483286Z", "customer_id": 1, "value": "301.99",
               "currency": None, "result": True},
        response_only=True,
        status_codes=["201"],
    ),
    OpenApiExample(
        "Declined",
        value={"id": 2, "created_at": "2026-11-24T06:57:47.512113Z", "customer_id": 2, "value": "120.50",
               "currency": "EUR", "result": False},
        response_only=True,
        status_codes=["201"],
    ),
] + [
    OpenApiExample(code, value=body, response_only=True, status_codes=[status_code])
    for status_code, bodies in ERROR_EXAMPLES.items()
    for code, body in bodies.items()
]
EXAMPLES = REQUEST_EXAMPLES + RESPONSE_EXAMPLES
