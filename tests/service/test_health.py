"""Health views for the Kubernetes probes, and the API schema and docs pages."""

import json
import logging

import pytest
from django.db import connection

from payment_app import health

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
    assert json.loads(response.content) == {"DatabaseWritable": "OK", "MigrationsApplied": "OK"}


@pytest.fixture
def readiness_log(monkeypatch, caplog):
    """A fresh per-worker readiness state, and every log record of the test."""
    monkeypatch.setattr(health, "STATE", health._ReadinessState())
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("accept", ["application/json", "text/html", "*/*"])
def test_readiness_fails_with_503_and_no_internals(client, database_unreachable, accept):
    response = client.get("/readyz", HTTP_ACCEPT=accept)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    results = json.loads(response.content)
    expected = "cannot query the database" if connection.vendor == "postgresql" else "cannot open the database"
    assert results["DatabaseWritable"] == f"Unavailable: {expected}"
    text = response.content.decode()
    # Nothing about where the database is: not its host, port, file or driver message.
    settings_dict = connection.settings_dict
    for internal in (settings_dict.get("HOST"), settings_dict.get("PORT"), str(settings_dict["NAME"]), "failed"):
        if internal:
            assert str(internal) not in text, (internal, text)


@pytest.mark.django_db(transaction=True)
def test_a_change_of_readiness_is_logged_once_and_never_as_an_error(client, database_unreachable, readiness_log):
    for _ in range(3):
        assert client.get("/readyz", HTTP_ACCEPT="application/json").status_code == 503
    records = [r for r in readiness_log.records if r.name not in ("django.db.backends",)]
    assert [r.levelname for r in records if r.levelno >= logging.ERROR] == []
    changes = [r for r in records if r.name == "payment_app.health"]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in changes] == [("WARNING", "not ready")], records
    # The log, not the answer, carries the detail an operator needs.
    assert "DatabaseWritable" in changes[0].getMessage() and "(" in changes[0].getMessage()


@pytest.mark.django_db(transaction=True)
def test_recovery_is_logged_once(client, readiness_log, monkeypatch):
    health.STATE.ready = False
    for _ in range(3):
        assert client.get("/readyz", HTTP_ACCEPT="application/json").status_code == 200
    changes = [(r.levelname, r.getMessage()) for r in readiness_log.records if r.name == "payment_app.health"]
    assert changes == [("INFO", "ready")]


def test_readiness_fails_with_unapplied_migrations(client, monkeypatch):
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("fake", False)])
    response = client.get("/readyz", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
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
