"""The HTTP API. Views are thin: validate, call the service, serialize."""

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import UnsupportedMediaType, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from payment_app import errors
from payment_app.fields import AmountField, CurrencyField, StrictIntegerField
from payment_app.models import (
    AMOUNT_DECIMAL_PLACES,
    AMOUNT_MAX_DIGITS,
    CUSTOMER_ID_MAX,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    ChargeAttempt,
)
from payment_app.parsers import refuse_chunked
from payment_app.services import charge_attempt_create


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    result = serializers.BooleanField(help_text="Always false: nothing was charged")
    error = serializers.CharField()
    reason = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


# DRF deep-copies the declared fields for every serializer instance so that binding one
# (field_name, parent, source) does not touch the class's; a field's deep copy re-runs its
# __init__ (validators and all): about half the time of validating the charge and
# rendering the answer (docs/performance.md). For flat fields (no child field, no nested
# serializer) a shallow copy binds just as independently: bind() only sets attributes on
# the copy, and the validator lists and error messages it shares with the declared field
# are not changed after __init__. The copy is made by hand (a new instance sharing the
# attributes): copy.copy() goes through __reduce_ex__ and takes about four times as long.
# (A comment, not a docstring: drf-spectacular would put a docstring into the OpenAPI
# components.)
class _FlatSerializer(serializers.Serializer):
    def get_fields(self):
        return {name: _shallow_copy(field) for name, field in self._declared_fields.items()}


def _shallow_copy(field: serializers.Field) -> serializers.Field:
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    return clone


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


class ChargeCreateApi(APIView):
    """Charge a customer. This is the URL Antaeus's PAYMENT_PROVIDER_ENDPOINT names."""

    # No OPTIONS metadata: every answer on this path carries "result".
    metadata_class = None

    @extend_schema_serializer(component_name="ChargeRequest")
    class InputSerializer(_FlatSerializer):
        customer_id = StrictIntegerField(min_value=1, max_value=CUSTOMER_ID_MAX)
        value = AmountField()
        currency = CurrencyField()

    @extend_schema_serializer(component_name="Charge")
    class OutputSerializer(_FlatSerializer):
        # A plain Serializer with the fields spelled out: a ModelSerializer rebuilds its
        # fields from the model on every response, a sixth of the view's time
        # (docs/performance.md).
        id = serializers.IntegerField(read_only=True)
        created_at = serializers.DateTimeField(required=False)
        customer_id = serializers.IntegerField(min_value=0, max_value=CUSTOMER_ID_MAX)
        value = serializers.DecimalField(
            source="amount", max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES
        )
        currency = serializers.SerializerMethodField(help_text="ISO 4217 code; null when unknown")
        result = serializers.BooleanField(source="succeeded")

        def get_currency(self, attempt: ChargeAttempt) -> str | None:
            return attempt.currency or None

    @extend_schema(
        operation_id="charge_create",
        tags=["charges"],
        request=InputSerializer,
        examples=REQUEST_EXAMPLES + RESPONSE_EXAMPLES,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                type=IDEMPOTENCY_KEY_SCHEMA,
                description="Retry-safe key (1-255 printable ASCII characters): a repeat with the "
                "same parameters replays the first response; other parameters are refused.",
            )
        ],
        responses={
            201: OutputSerializer,
            400: OpenApiResponse(
                ErrorSerializer,
                description="Invalid request (validation_error), not JSON (parse_error), or a body cut "
                "short (incomplete_body)",
            ),
            408: OpenApiResponse(ErrorSerializer, description="Body not received within PAYMENT_BODY_READ_TIMEOUT_SECONDS"),
            411: OpenApiResponse(ErrorSerializer, description="A chunked body, without Content-Length"),
            413: OpenApiResponse(ErrorSerializer, description="Body over the size limit"),
            415: OpenApiResponse(ErrorSerializer, description="Not application/json"),
            422: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with other parameters"),
            503: OpenApiResponse(ErrorSerializer, description="Storage unavailable, nothing charged"),
        },
        description="Record a charge attempt and return its outcome in `result` (true: charged). "
        "Both outcomes answer 201: the attempt was created either way.",
    )
    def post(self, request):
        if not request.content_type:
            raise UnsupportedMediaType("", detail="Send the charge as Content-Type: application/json.")
        refuse_chunked(request)
        idempotency_key = _idempotency_key(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        attempt, _created = charge_attempt_create(
            customer_id=serializer.validated_data["customer_id"],
            amount=serializer.validated_data["value"],
            currency=serializer.validated_data["currency"],
            idempotency_key=idempotency_key,
        )
        return Response(self.OutputSerializer(attempt).data, status=status.HTTP_201_CREATED)


def _idempotency_key(request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or not key.isascii() or not key.isprintable():
        raise ValidationError(
            {"Idempotency-Key": [f"Must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."]}
        )
    return key
