"""The service on PostgreSQL when the database misbehaves: stopped, restarted, its
connections cut; migrations from several processes at once; credentials kept out of
every answer and log line. Each test that hurts the database gets a private server.

These run in every `make test` (whatever PAYMENT_TEST_BACKEND says): PostgreSQL is the
production store, and its failure handling is not covered by the service suite.
"""

import json
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import postgres
from tests.reliability.harness import charge_body, concurrently, figures
from harness.server import REPO, Server, antaeus_request, send_raw

pytestmark = [pytest.mark.server, pytest.mark.postgresql]


@pytest.fixture(scope="module")
def private_pg():
    pg = postgres.PrivatePostgres().init()
    yield pg
    pg.destroy()


@pytest.fixture
def pg_server(private_pg, tmp_path):
    srv = Server(tmp_path, database_url=private_pg.url(), env={"LOG_LEVEL": "INFO"})
    yield srv.start()
    srv.stop()


def timed_charge(srv: Server, body: bytes, timeout: float = 30.0):
    started = time.monotonic()
    reply = send_raw(srv.port, antaeus_request(body), timeout=timeout)
    return reply, time.monotonic() - started


def assert_storage_unavailable(reply) -> None:
    assert reply.status == 503, reply.body
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["result"] is False and body["error"] == "storage_unavailable", body


def wait_for_charge(srv: Server, *, timeout: float = 30.0) -> tuple[int, float]:
    """Charge until one is recorded; returns (503 answers before it, seconds)."""
    started, refused = time.monotonic(), 0
    while time.monotonic() - started < timeout:
        reply = srv.charge()
        if reply.status == 201:
            return refused, time.monotonic() - started
        assert_storage_unavailable(reply)
        refused += 1
        time.sleep(0.2)
    raise AssertionError(f"no charge recorded within {timeout}s of the database returning")


def metric(srv: Server, name: str, **labels) -> float | None:
    """One sample of the server's metrics port."""
    for family in text_string_to_metric_families(srv.metrics()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_database_stopped_then_back_json_503_then_recovery_without_restart(private_pg, pg_server):
    srv = pg_server
    workers = srv.workers()
    assert srv.charge().status == 201

    private_pg.stop()
    try:
        reply, seconds = timed_charge(srv, charge_body(41))
        assert_storage_unavailable(reply)
        ready = srv.get("/readyz")
        alive = srv.get("/healthz")
        assert ready.status != 200 and ready.headers["content-type"].startswith("application/json")
        assert alive.status == 200  # liveness never depends on the database
        assert metric(srv, "payment_ready") == 0.0  # the last readiness answer, exported
    finally:
        private_pg.start()
    refused, recovery = wait_for_charge(srv)
    # Every 503 of the outage is counted as the metrics' storage_unavailable outcome.
    outage = {"outcome": "storage_unavailable", "error": "storage_unavailable"}
    assert metric(srv, "payment_charges_total", **outage) == 1 + refused
    figures("postgres-outage", refused_seconds=seconds, refused_after_return=refused, recovered_seconds=recovery)
    assert seconds < 10, "a charge must fail promptly while the database is down"
    assert srv.get("/readyz").status == 200
    assert srv.workers() == workers  # recovered by itself: same workers, no restart
    log = srv.log()
    assert private_pg.password not in log and private_pg.password not in ready.body.decode()


def test_connections_cut_under_the_service_are_replaced(private_pg, pg_server):
    srv = pg_server
    for _ in range(4):  # every worker has its connection open
        assert srv.charge().status == 201
    assert private_pg.terminate_backends() >= 1
    answers = [srv.charge() for _ in range(8)]
    statuses = [a.status for a in answers]
    figures("postgres-cut", statuses=statuses)
    for reply in answers:  # each is JSON with "result", whatever happened
        assert isinstance(reply.json()["result"], bool)
    # The health check on reuse finds the dead connection before the charge runs.
    assert statuses == [201] * 8
    assert srv.get("/readyz").status == 200


def test_restart_mid_traffic_answers_only_json_and_recovers(private_pg, pg_server):
    srv = pg_server
    statuses = []
    private_pg.restart()
    for n in range(20):
        reply = send_raw(srv.port, antaeus_request(charge_body(500 + n)), timeout=30)
        assert isinstance(reply.json()["result"], bool)
        statuses.append(reply.status)
    assert set(statuses) <= {201, 503} and statuses[-1] == 201, statuses


def test_wrong_password_is_not_ready_and_not_repeated(private_pg, tmp_path):
    wrong = "wrong-" + private_pg.password
    url = private_pg.url().replace(private_pg.password, wrong)
    srv = Server(tmp_path, database_url=url, env={"MIGRATE_ON_START": "false"})
    srv.start(wait=False)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                alive = srv.get("/healthz")
                break
            except OSError:
                time.sleep(0.1)
        assert alive.status == 200
        ready, reply = srv.get("/readyz"), srv.charge()
        assert ready.status != 200
        assert_storage_unavailable(reply)
    finally:
        srv.stop()
    seen = srv.log() + ready.body.decode() + reply.body.decode()
    assert "password authentication failed" in srv.log() or "authentication" in seen
    assert wrong not in seen and private_pg.password not in seen


def test_migrations_from_several_processes_at_once_apply_once(tmp_path):
    url = postgres.create_database()
    env = {**Server(tmp_path, database_url=url).environment(), "DJANGO_SECRET_KEY": "test-only"}
    # As in the migration Job: no gunicorn, so no multiprocess metric files.
    del env["PROMETHEUS_MULTIPROC_DIR"]
    runners = [
        subprocess.Popen([sys.executable, "manage.py", "migrate_locked", "--noinput"], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(4)
    ]
    outputs = [r.communicate(timeout=300)[0] for r in runners]
    assert [r.returncode for r in runners] == [0] * 4, outputs
    applied = sum(o.count("Applying ") for o in outputs)
    with postgres.connect(url) as db:
        rows = db.execute("SELECT app, name, count(*) FROM django_migrations GROUP BY app, name").fetchall()
    assert rows and all(count == 1 for _app, _name, count in rows)
    assert applied == len(rows)  # each migration applied by exactly one runner


def test_readiness_waits_for_the_schema(tmp_path):
    srv = Server(tmp_path, database_url=postgres.create_database(), env={"MIGRATE_ON_START": "false"})
    srv.start(wait=False)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = srv.get("/readyz")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ready.status != 200 and "not applied" in ready.body.decode()
        migrated = subprocess.run([sys.executable, "manage.py", "migrate_locked", "--noinput"], cwd=REPO,
                                  env=srv.environment(), capture_output=True, text=True, timeout=300)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert srv.get("/readyz").status == 200
        assert srv.charge().status == 201
    finally:
        srv.stop()


def test_one_idempotency_key_from_two_servers_stores_one_attempt(tmp_path):
    url = postgres.create_database()
    first = Server(tmp_path / "a", database_url=url).start()
    second = Server(tmp_path / "b", database_url=url).start()
    try:
        body = charge_body(77, "12.34")
        ports = [first.port, second.port] * 16
        replies = concurrently(
            len(ports),
            lambda i: send_raw(ports[i], antaeus_request(body, extra_headers={"Idempotency-Key": "two-pods"}), timeout=30),
        )
        rows = first.query("SELECT id FROM payment_app_chargeattempt WHERE idempotency_key = %s", ("two-pods",))
    finally:
        first.stop()
        second.stop()
    assert len(rows) == 1
    assert {r.status for r in replies} == {201}
    assert {json.loads(r.body)["id"] for r in replies} == {rows[0][0]}
