"""The HTTP API. Views are thin: validate, call the service, serialize."""

import time

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import UnsupportedMediaType, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from payment_app import metrics
from payment_app.fields import AmountField, CurrencyField, StrictIntegerField
from payment_app.models import (
    AMOUNT_DECIMAL_PLACES,
    AMOUNT_MAX_DIGITS,
    CUSTOMER_ID_MAX,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    ChargeAttempt,
)
from payment_app.openapi import EXAMPLES, IDEMPOTENCY_KEY_SCHEMA
from payment_app.parsers import refuse_chunked
from payment_app.services import charge_attempt_create


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    result = serializers.BooleanField(help_text="Always false: nothing was charged")
    error = serializers.CharField()
    reason = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


# Unbound fields used only to format values: to_representation() does not change them.
_DATETIME = serializers.DateTimeField()
_AMOUNT = serializers.DecimalField(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES)


class ChargeCreateApi(APIView):
    """Charge a customer. This is the URL Antaeus's PAYMENT_PROVIDER_ENDPOINT names."""

    # No OPTIONS metadata: every answer on this path carries "result".
    metadata_class = None

    @extend_schema_serializer(component_name="ChargeRequest")
    class InputSerializer(serializers.Serializer):
        def get_fields(self):
            # Each serializer needs field instances of its own: built here, cheaper than
            # DRF's deep copy of fields declared on the class (docs/performance.md).
            return {
                "customer_id": StrictIntegerField(min_value=1, max_value=CUSTOMER_ID_MAX),
                "value": AmountField(),
                "currency": CurrencyField(),
            }

    @extend_schema_serializer(component_name="Charge")
    class OutputSerializer(serializers.Serializer):
        # A plain Serializer with the fields spelled out: a ModelSerializer rebuilds its
        # fields from the model on every response (docs/performance.md).
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

        def to_representation(self, attempt: ChargeAttempt) -> dict:
            # The declared fields publish the schema; rendering through them would deep-copy
            # all six for every answer (docs/performance.md). The same dict, formatted by
            # DRF's own fields; tests/service/test_charge_api.py checks it against DRF's
            # field-by-field rendering.
            return {
                "id": attempt.pk,
                "created_at": _DATETIME.to_representation(attempt.created_at),
                "customer_id": attempt.customer_id,
                "value": _AMOUNT.to_representation(attempt.amount),
                "currency": self.get_currency(attempt),
                "result": attempt.succeeded,
            }

    def dispatch(self, request, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            metrics.charge_timed(started)

    def handle_exception(self, exc):
        # Every refused charge passes here on its way to the one error shape: count it by
        # the code the answer carries.
        response = super().handle_exception(exc)
        metrics.charge_refused(status=response.status_code, error=str(response.data.get("error", "error")))
        return response

    @extend_schema(
        operation_id="charge_create",
        tags=["charges"],
        request=InputSerializer,
        examples=EXAMPLES,
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
        attempt, created = charge_attempt_create(
            customer_id=serializer.validated_data["customer_id"],
            amount=serializer.validated_data["value"],
            currency=serializer.validated_data["currency"],
            idempotency_key=idempotency_key,
        )
        metrics.charge_recorded(succeeded=attempt.succeeded, created=created)
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
