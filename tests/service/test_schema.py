"""The published OpenAPI schema: valid as what it declares, and its examples true to the server."""

import json

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from payment_app import openapi
from payment_app.models import ChargeAttempt
from tests.service.conftest import ANTAEUS_BODY, assert_error, post_raw

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def operation(schema: dict) -> dict:
    return schema["paths"]["/api/v1/charges"]["post"]


def test_served_schema_is_valid_openapi_of_the_version_it_declares(schema):
    assert schema["openapi"].startswith("3.0.")
    validate(schema)  # openapi-spec-validator picks the 3.0 or 3.1 rules from `openapi`


def test_the_validator_catches_what_the_schema_used_to_get_wrong(schema):
    # The 3.1 spelling of exclusiveMinimum in a 3.0 document: the validator must refuse it,
    # or the test above proves nothing.
    amount = schema["components"]["schemas"]["ChargeRequest"]["properties"]["value"]
    amount["exclusiveMinimum"] = 0
    with pytest.raises(OpenAPIValidationError):
        validate(schema)


def test_schema_promises_what_the_server_enforces(schema):
    request = schema["components"]["schemas"]["ChargeRequest"]
    currency_code = request["properties"]["currency"]["oneOf"][0]
    assert "EUR" in currency_code["enum"] and "XYZ" not in currency_code["enum"]
    assert "default" not in request["properties"]["currency"]
    key = next(p for p in operation(schema)["parameters"] if p["name"] == "Idempotency-Key")["schema"]
    assert key["minLength"] == 1 and key["maxLength"] == 255 and key["pattern"]


def request_examples(schema: dict) -> list[dict]:
    examples = operation(schema)["requestBody"]["content"]["application/json"]["examples"]
    return [example["value"] for example in examples.values()]


def test_try_it_out_prefills_a_charge_the_server_accepts(schema, api_client):
    """Swagger UI fills "Try it out" with the first request example."""
    examples = request_examples(schema)
    assert examples[0] == json.loads(ANTAEUS_BODY)
    for example in examples:
        # Within JavaScript's exact integers: Swagger UI parses the example in the browser.
        assert example["customer_id"] <= 2**53
        response = post_raw(api_client, json.dumps(example))
        assert response.status_code == 201, response.content
    assert ChargeAttempt.objects.count() == len(examples)


def response_example(schema: dict, status: str, code: str) -> dict:
    examples = operation(schema)["responses"][status]["content"]["application/json"]["examples"]
    values = [example["value"] for example in examples.values()]
    assert all("additionalProp1" not in json.dumps(value) for value in values)
    return next(value for value in values if value.get("error") == code)


@pytest.mark.parametrize(
    "status, code, body, extra",
    [
        ("400", "validation_error", '{"customer_id":"1","value":301.999}', {}),
        ("400", "parse_error", '{"currency":{},"customer_id":}', {}),
        ("413", "payload_too_large", '{"pad":"' + "x" * 5000 + '"}', {}),
        ("411", "length_required", ANTAEUS_BODY, {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""}),
    ],
)
def test_error_examples_are_the_bodies_the_server_writes(schema, api_client, status, code, body, extra):
    answer = assert_error(post_raw(api_client, body, **extra), int(status), code)
    assert response_example(schema, status, code) == answer


def test_unsupported_media_type_example_is_real(schema, api_client):
    answer = assert_error(post_raw(api_client, ANTAEUS_BODY, content_type="text/plain"), 415, "unsupported_media_type")
    assert response_example(schema, "415", "unsupported_media_type") == answer


def test_idempotency_conflict_example_is_real(schema, api_client):
    post_raw(api_client, ANTAEUS_BODY, HTTP_IDEMPOTENCY_KEY="example")
    answer = assert_error(
        post_raw(api_client, '{"customer_id":2,"value":1}', HTTP_IDEMPOTENCY_KEY="example"), 422,
        "idempotency_key_reused",
    )
    assert response_example(schema, "422", "idempotency_key_reused") == answer


def test_every_documented_error_status_has_an_example(schema):
    for status, response in operation(schema)["responses"].items():
        assert response["content"]["application/json"].get("examples"), status
    assert set(openapi.ERROR_EXAMPLES) == {s for s in operation(schema)["responses"] if s != "201"}
