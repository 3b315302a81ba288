import json

import pytest
from rest_framework.test import APIClient

from harness.server import ANTAEUS_BODY, ANTAEUS_HOST, CLUSTER_ALLOWED_HOSTS  # noqa: F401 (re-exported to the tests)

CHARGE_URL = "/api/v1/charges"


@pytest.fixture
def api_client(settings):
    settings.ALLOWED_HOSTS = CLUSTER_ALLOWED_HOSTS.split(",")
    return APIClient(enforce_csrf_checks=True, HTTP_HOST=ANTAEUS_HOST)


def post_raw(client, body: bytes | str, content_type="application/json", path=CHARGE_URL, **extra):
    """POST a body exactly as given (no client-side JSON encoding)."""
    if isinstance(body, str):
        body = body.encode()
    return client.generic("POST", path, body, content_type=content_type, **extra)


def assert_error(response, status: int, error: str) -> dict:
    """The one error shape: JSON object, result false, a code and a readable reason."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert isinstance(body, dict)
    assert body["result"] is False
    assert body["error"] == error, body
    assert isinstance(body["reason"], str) and body["reason"]
    return body
