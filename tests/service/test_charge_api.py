"""The charge endpoint through Django's test api_client: the Antaeus contract and every refusal."""

import json
from decimal import Decimal

import pytest
from django.db import DatabaseError

from payment_app import apis
from payment_app.models import ChargeAttempt
from tests.service.conftest import ANTAEUS_BODY, CHARGE_URL, assert_error, post_raw

pytestmark = pytest.mark.django_db


def charge_ok(response) -> dict:
    assert response.status_code == 201, response.content
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert isinstance(body["result"], bool)
    return body


# --- What stock Antaeus sends ----------------------------------------------------------------


def test_stock_antaeus_body_is_charged_and_recorded(api_client):
    body = charge_ok(post_raw(api_client, ANTAEUS_BODY))
    attempt = ChargeAttempt.objects.get()
    assert body == {
        "id": attempt.pk,
        "created_at": attempt.created_at.isoformat().replace("+00:00", "Z"),
        "customer_id": 1,
        "value": "301.99",
        "currency": None,
        "result": attempt.succeeded,
    }
    assert attempt.amount == Decimal("301.99")
    assert attempt.currency == ""


@pytest.mark.parametrize(
    "raw, stored",
    [
        ('{"value":301.99,"customer_id":2,"currency":{}}', Decimal("301.99")),
        ('{"customer_id":2,"currency":{},"value":120.5}', Decimal("120.50")),
        ('{"currency":{},"value":100,"customer_id":2}', Decimal("100.00")),
        ('{"currency":{},"value":0.01,"customer_id":2}', Decimal("0.01")),
        ('{"currency":{},"value":999999999.99,"customer_id":2}', Decimal("999999999.99")),
    ],
)
def test_amounts_as_antaeus_writes_them_are_stored_exactly(api_client, raw, stored):
    charge_ok(post_raw(api_client, raw))
    attempt = ChargeAttempt.objects.get()
    # Read back through a fresh query: what the database holds, not the object in memory.
    assert ChargeAttempt.objects.values_list("amount", flat=True).get(pk=attempt.pk) == stored
    assert str(ChargeAttempt.objects.get(pk=attempt.pk).amount) == f"{stored:.2f}"


@pytest.mark.parametrize(
    "currency, stored, shown",
    [("{}", "", None), ("null", "", None), ('"EUR"', "EUR", "EUR"), ('"DKK"', "DKK", "DKK")],
)
def test_currency_code_or_unknown(api_client, currency, stored, shown):
    body = charge_ok(post_raw(api_client, f'{{"customer_id":1,"value":10,"currency":{currency}}}'))
    assert body["currency"] == shown
    assert ChargeAttempt.objects.get().currency == stored


def test_currency_may_be_absent_and_extra_keys_are_ignored(api_client):
    charge_ok(post_raw(api_client, '{"customer_id":1,"value":10,"invoice_id":7,"note":"x"}'))
    assert ChargeAttempt.objects.get().currency == ""


def test_trailing_slash_is_served_without_redirect(api_client):
    charge_ok(post_raw(api_client, ANTAEUS_BODY, path=CHARGE_URL + "/"))


def test_content_type_with_charset_is_accepted(api_client):
    charge_ok(post_raw(api_client, ANTAEUS_BODY, content_type="application/json; charset=utf-8"))


def test_no_csrf_token_and_no_credentials_needed(api_client):
    # The fixture's api_client enforces CSRF checks like a browser-less caller would meet them.
    charge_ok(post_raw(api_client, ANTAEUS_BODY))


# --- Refusals: 4xx JSON with result false, nothing stored -------------------------------------

BAD_BODIES = [
    # (id, body, error code, field that carries the error or None)
    ("malformed", '{"customer_id":1,', "parse_error", None),
    ("not-json", "customer_id=1&value=2", "parse_error", None),
    ("empty-object", "{}", "validation_error", "customer_id"),
    ("array", "[1, 2]", "validation_error", "non_field_errors"),
    ("string", '"charge"', "validation_error", "non_field_errors"),
    ("null", "null", "validation_error", "non_field_errors"),
    ("customer-missing", '{"value":10}', "validation_error", "customer_id"),
    ("customer-zero", '{"customer_id":0,"value":10}', "validation_error", "customer_id"),
    ("customer-negative", '{"customer_id":-1,"value":10}', "validation_error", "customer_id"),
    ("customer-string", '{"customer_id":"1","value":10}', "validation_error", "customer_id"),
    ("customer-bool", '{"customer_id":true,"value":10}', "validation_error", "customer_id"),
    ("customer-fraction", '{"customer_id":1.5,"value":10}', "validation_error", "customer_id"),
    ("customer-too-big", '{"customer_id":9223372036854775808,"value":10}', "validation_error", "customer_id"),
    ("customer-null", '{"customer_id":null,"value":10}', "validation_error", "customer_id"),
    ("value-missing", '{"customer_id":1}', "validation_error", "value"),
    ("value-zero", '{"customer_id":1,"value":0}', "validation_error", "value"),
    ("value-negative", '{"customer_id":1,"value":-5.5}', "validation_error", "value"),
    ("value-string", '{"customer_id":1,"value":"301.99"}', "validation_error", "value"),
    ("value-bool", '{"customer_id":1,"value":true}', "validation_error", "value"),
    ("value-exponent", '{"customer_id":1,"value":1e2}', "validation_error", "value"),
    ("value-three-places", '{"customer_id":1,"value":301.999}', "validation_error", "value"),
    ("value-over-bound", '{"customer_id":1,"value":1000000000}', "validation_error", "value"),
    ("value-null", '{"customer_id":1,"value":null}', "validation_error", "value"),
    ("value-nan", '{"customer_id":1,"value":NaN}', "parse_error", None),
    ("value-infinity", '{"customer_id":1,"value":Infinity}', "parse_error", None),
    ("currency-lowercase", '{"customer_id":1,"value":10,"currency":"eur"}', "validation_error", "currency"),
    ("currency-unknown", '{"customer_id":1,"value":10,"currency":"XYZ"}', "validation_error", "currency"),
    ("currency-number", '{"customer_id":1,"value":10,"currency":978}', "validation_error", "currency"),
    ("currency-object", '{"customer_id":1,"value":10,"currency":{"code":"EUR"}}', "validation_error", "currency"),
    ("customer-huge", '{"customer_id":' + "9" * 4000 + ',"value":10}', "validation_error", "customer_id"),
    ("deep-nesting", '{"customer_id":1,"value":10,"x":' + "[" * 1500 + "]" * 1500 + "}", "parse_error", None),
    ("not-utf8", b'{"customer_id":1,"value":10,"currency":"\xff"}', "parse_error", None),
    # A member named twice: parsers disagree on which value wins, so none is picked.
    ("duplicate-value", '{"customer_id":1,"value":1,"value":999}', "parse_error", None),
    ("duplicate-nested", '{"customer_id":1,"value":1,"x":{"a":1,"a":2}}', "parse_error", None),
    ("utf16-bom", '{"customer_id":1,"value":10}'.encode("utf-16"), "parse_error", None),
]


@pytest.mark.parametrize("body, error, field", [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_bad_body_is_refused_with_reason_and_nothing_stored(api_client, body, error, field):
    answer = assert_error(post_raw(api_client, body), 400, error)
    if field is not None:
        assert field in answer["fields"], answer
        assert field in answer["reason"]
    assert ChargeAttempt.objects.count() == 0


def test_duplicate_member_is_named_in_the_reason(api_client):
    answer = assert_error(post_raw(api_client, '{"customer_id":1,"value":1,"value":999}'), 400, "parse_error")
    assert "'value' more than once" in answer["reason"]


@pytest.mark.parametrize(
    "charset, body",
    [
        ("latin-1", b'{"customer_id":1,"value":10,"currency":"EUR"}'),
        ("iso-8859-1", b'{"customer_id":1,"value":10}'),
        ("utf-16", '{"customer_id":1,"value":10}'.encode("utf-16")),
        ("utf-16le", '{"customer_id":1,"value":10}'.encode("utf-16-le")),
        ("us-ascii", b'{"customer_id":1,"value":10}'),
        ("no-such-charset", b'{"customer_id":1,"value":10}'),
    ],
)
def test_a_declared_charset_other_than_utf8_is_refused(api_client, charset, body):
    response = post_raw(api_client, body, content_type=f"application/json; charset={charset}")
    answer = assert_error(response, 400, "parse_error")
    assert "UTF-8" in answer["reason"] and charset in answer["reason"]
    assert ChargeAttempt.objects.count() == 0


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_utf8_may_be_declared(api_client, charset):
    charge_ok(post_raw(api_client, ANTAEUS_BODY, content_type=f"application/json; charset={charset}"))


def test_integer_beyond_pythons_conversion_limit_is_a_parse_error(api_client, settings):
    settings.PAYMENT_MAX_BODY_BYTES = 10_000
    body = '{"customer_id":' + "9" * 5000 + ',"value":10}'
    answer = assert_error(post_raw(api_client, body), 400, "parse_error")
    assert "not valid JSON" in answer["reason"]
    assert ChargeAttempt.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_refused(api_client, content_type):
    assert_error(post_raw(api_client, ANTAEUS_BODY, content_type=content_type), 415, "unsupported_media_type")
    assert ChargeAttempt.objects.count() == 0


def test_missing_content_type_is_refused(api_client):
    response = api_client.generic("POST", CHARGE_URL, ANTAEUS_BODY, content_type="")
    assert_error(response, 415, "unsupported_media_type")


def test_body_over_the_limit_is_refused_before_it_is_read(api_client, settings):
    body = json.dumps({"customer_id": 1, "value": 10, "pad": "x" * settings.PAYMENT_MAX_BODY_BYTES})
    answer = assert_error(post_raw(api_client, body), 413, "payload_too_large")
    assert str(settings.PAYMENT_MAX_BODY_BYTES) in answer["reason"]
    assert ChargeAttempt.objects.count() == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
def test_other_methods_are_refused_as_json(api_client, method):
    assert_error(api_client.generic(method, CHARGE_URL), 405, "method_not_allowed")


def test_head_is_refused(api_client):
    assert api_client.head(CHARGE_URL).status_code == 405


def test_unknown_path_is_json_404(api_client):
    answer = assert_error(post_raw(api_client, ANTAEUS_BODY, path="/api/v1/charge"), 404, "not_found")
    assert "/api/v1/charges" in answer["reason"]


def test_disallowed_host_is_json_400(api_client):
    response = post_raw(api_client, ANTAEUS_BODY, HTTP_HOST="evil.example.com")
    assert_error(response, 400, "disallowed_host")
    assert ChargeAttempt.objects.count() == 0


def test_storage_failure_is_json_503_and_nothing_charged(api_client, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(apis, "charge_attempt_create", broken)
    assert_error(post_raw(api_client, ANTAEUS_BODY), 503, "storage_unavailable")


def test_unexpected_error_is_json_500(api_client, monkeypatch):
    def bug(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(apis, "charge_attempt_create", bug)
    answer = assert_error(post_raw(api_client, ANTAEUS_BODY), 500, "error")
    assert "a bug" not in answer["reason"]


# --- Idempotency-Key ------------------------------------------------------------------------


def test_same_key_same_parameters_replays_the_first_response(api_client):
    first = post_raw(api_client, ANTAEUS_BODY, HTTP_IDEMPOTENCY_KEY="inv-1")
    # Same parameters written differently: other key order, spacing, 301.990 is not 301.99's twin
    # in text but is the same amount.
    again = post_raw(api_client, '{ "value": 301.99, "customer_id": 1, "currency": {} }', HTTP_IDEMPOTENCY_KEY="inv-1")
    assert again.status_code == first.status_code == 201
    assert json.loads(again.content) == json.loads(first.content)
    assert ChargeAttempt.objects.count() == 1


def test_same_key_other_parameters_is_refused_and_nothing_stored(api_client):
    first = charge_ok(post_raw(api_client, ANTAEUS_BODY, HTTP_IDEMPOTENCY_KEY="inv-2"))
    other = post_raw(api_client, '{"currency":{},"customer_id":1,"value":301.98}', HTTP_IDEMPOTENCY_KEY="inv-2")
    assert_error(other, 422, "idempotency_key_reused")
    assert list(ChargeAttempt.objects.values_list("id", flat=True)) == [first["id"]]


def test_without_key_every_request_is_a_new_attempt(api_client):
    ids = {charge_ok(post_raw(api_client, ANTAEUS_BODY))["id"] for _ in range(3)}
    assert len(ids) == 3 == ChargeAttempt.objects.count()


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\there"])
def test_bad_idempotency_key_is_refused(api_client, key):
    answer = assert_error(post_raw(api_client, ANTAEUS_BODY, HTTP_IDEMPOTENCY_KEY=key), 400, "validation_error")
    assert "Idempotency-Key" in answer["fields"]
    assert ChargeAttempt.objects.count() == 0


def test_longest_key_is_accepted(api_client):
    charge_ok(post_raw(api_client, ANTAEUS_BODY, HTTP_IDEMPOTENCY_KEY="k" * 255))


# --- The answer's rendering ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount, currency, succeeded",
    [("301.99", "", True), ("100", "EUR", False), ("120.5", "DKK", True), ("999999999.99", "", False), ("0.01", "USD", True)],
)
def test_answer_is_what_drf_renders_from_the_declared_fields(amount, currency, succeeded):
    """OutputSerializer builds its dict directly (docs/performance.md); the declared fields
    publish the schema. The two must agree, key for key and value for value."""
    from rest_framework import serializers

    attempt = ChargeAttempt.objects.create(
        customer_id=2**63 - 1, amount=Decimal(amount), currency=currency, succeeded=succeeded
    )
    attempt.refresh_from_db()
    output = apis.ChargeCreateApi.OutputSerializer(attempt)
    by_fields = serializers.Serializer.to_representation(output, attempt)
    assert output.data == by_fields
    assert list(output.data) == list(by_fields)
