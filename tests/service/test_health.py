"""Health views for the Kubernetes probes, and the API schema and docs pages."""

import json

import pytest
from django.db import connection

from harness.server import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(client, settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    client.defaults["HTTP_HOST"] = "localhost"
    return client


@pytest.fixture
def database_unreachable(monkeypatch, tmp_path):
    """Point the connections at a database that is not there, on either backend."""
    if connection.vendor != "postgresql":
        # Not closed: the SQLite test database lives in memory only while a connection is open.
        monkeypatch.setitem(connection.settings_dict, "NAME", str(tmp_path / "missing" / "db.sqlite3"))
        yield
        return
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", str(free_port()))  # nothing listens there
    yield
    connection.close()


@pytest.mark.django_db(transaction=True)  # PostgreSQL: the connection is closed and reopened
def test_liveness_has_no_dependencies(client, database_unreachable):
    # Even with the database gone, the process is alive: liveness must not restart it.
    response = client.get("/healthz", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert json.loads(response.content) == {}


@pytest.mark.django_db(transaction=True)  # the check takes the write lock from its own connection
def test_readiness_checks_database_writability_and_migrations(client):
    response = client.get("/readyz", HTTP_ACCEPT="application/json")
    assert response.status_code == 200, response.content
    assert set(json.loads(response.content).values()) == {"OK"}
    assert len(json.loads(response.content)) == 3


@pytest.mark.django_db(transaction=True)
def test_readiness_fails_when_the_database_cannot_be_written(client, database_unreachable):
    response = client.get("/readyz", HTTP_ACCEPT="application/json")
    assert response.status_code == 500
    results = json.loads(response.content)
    expected = "cannot query the database" if connection.vendor == "postgresql" else "cannot open the database"
    assert expected in results["DatabaseWritable(alias='default', lock_timeout=1.0)"]


def test_readiness_fails_with_unapplied_migrations(client, monkeypatch):
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("fake", False)])
    response = client.get("/readyz", HTTP_ACCEPT="application/json")
    assert response.status_code == 500
    assert "1 migration(s) not applied" in response.content.decode()


def test_openapi_schema_describes_the_charge_endpoint(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    operation = schema["paths"]["/api/v1/charges"]["post"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert request_ref == "#/components/schemas/ChargeRequest"
    request = schema["components"]["schemas"]["ChargeRequest"]
    assert set(request["required"]) == {"customer_id", "value"}
    assert request["properties"]["value"]["type"] == "number"
    created = operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert created == "#/components/schemas/Charge"
    assert "result" in schema["components"]["schemas"]["Charge"]["required"]
    # Served once, though the trailing-slash form is routed too.
    assert "/api/v1/charges/" not in schema["paths"]
    assert {"201", "400", "408", "413", "415", "422", "503"} <= set(operation["responses"])


def test_docs_page_is_served_without_external_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "cdn.jsdelivr.net" not in page
