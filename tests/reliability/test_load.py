"""Load, crash and graceful shutdown against the real server (gunicorn, several workers).

Each request carries its own customer_id, so every success answer is matched to the row
stored for it. The slow runs are marked stress (make stress); a short concurrent run is
part of make test.
"""

import os
import signal
import sys
import time

import pytest

from harness import postgres
from tests.reliability.harness import DatabaseLock, Load, figures, lost

WORKERS = 4
CONNECTIONS = 64


def server_env(**extra) -> dict[str, str]:
    return {"WEB_CONCURRENCY": str(WORKERS), **extra}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def database_url(backend: str) -> str | None:
    """SQLite (None) or a new database on the machine's PostgreSQL."""
    return postgres.create_database() if backend == "postgresql" else None


def check_concurrent_load(srv, total: int, backend: str = "sqlite") -> None:
    load = Load(srv.port, total=total, connections=CONNECTIONS).run(timeout=600)
    rows = srv.rows()
    ok, missing = load.ok(), lost(load, rows)
    locked = srv.log_count("database is locked")
    figures(
        "concurrency", backend=backend,
        requests=len(load.outcomes), ok=len(ok), errors=len(load.outcomes) - len(ok), locked=locked,
        stored=len(rows), lost=len(missing), connections=CONNECTIONS, workers=WORKERS, seconds=load.seconds,
        per_second=len(load.outcomes) / load.seconds,
    )
    assert len(load.outcomes) == total
    assert len(ok) == total, load.by_status()
    assert locked == 0
    assert len(rows) == len(ok) and not missing
    assert len({o.body["id"] for o in ok}) == total  # every answer names its own attempt
    assert srv.integrity() == "ok"


@pytest.mark.server
def test_concurrent_charges_short(servers):
    check_concurrent_load(servers(env=server_env()), total=640)


@pytest.mark.stress
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_charges(servers, backend):
    check_concurrent_load(servers(env=server_env(), database_url=database_url(backend)), total=5000, backend=backend)


@pytest.mark.stress
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_load_loses_no_acknowledged_charge(servers, backend):
    srv = servers(env=server_env(), database_url=database_url(backend))
    rounds, base = 3, 10_000_000
    for round_ in range(rounds):
        load = Load(srv.port, total=10**6, connections=CONNECTIONS, base=base * (round_ + 1), stop_on_refused=True)
        load.start()
        wait_for(lambda: load.answered() >= 1000, 120, "1000 answers before the kill")
        srv.kill()  # SIGKILL to master and workers at once
        load.join(timeout=120)
        killed_at = time.monotonic()
        srv.start()
        restart = time.monotonic() - killed_at
        ours = {i: row for i, row in srv.rows().items() if base * (round_ + 1) <= row[0] < base * (round_ + 2)}
        ok, missing = load.ok(), lost(load, ours)
        partial = [o for o in load.outcomes if o.error and o.error.startswith("partial")]
        sent = {o.customer_id for o in load.outcomes}
        integrity = srv.integrity()
        figures(
            "crash", backend=backend, round=round_ + 1, requests=len(load.outcomes), ok=len(ok),
            no_response=sum(1 for o in load.outcomes if o.error and o.error.startswith("no_response")),
            partial=len(partial), stored=len(ours), lost=len(missing),
            stored_unacknowledged=len(ours) - len(ok), integrity=integrity, restart_seconds=restart,
        )
        assert len(ok) >= 1000
        assert not missing, missing[:5]
        assert integrity == "ok"
        assert {row[0] for row in ours.values()} <= sent  # nothing stored that was not asked for
        assert len(ours) >= len(ok)
    # The restarted server takes charges again.
    assert srv.charge().status == 201


@pytest.mark.stress
def test_sigterm_during_load_completes_accepted_requests(servers):
    graceful = 20
    srv = servers(env=server_env(GUNICORN_GRACEFUL_TIMEOUT=str(graceful)))
    load = Load(srv.port, total=10**6, connections=CONNECTIONS, stop_on_refused=True).start()
    wait_for(lambda: load.answered() >= 1000, 120, "1000 answers before SIGTERM")
    # Hold the write lock for a moment so that requests are certainly in flight (waiting
    # on the busy timeout inside workers) when the signal arrives.
    with DatabaseLock(srv.database, sys.executable) as lock:
        time.sleep(0.5)
        term_at = time.monotonic()
        os.kill(srv.process.pid, signal.SIGTERM)  # to the master only, as the kubelet does to PID 1
        time.sleep(0.3)
        try:
            probe = srv.get("/readyz", timeout=1).status
        except OSError as exc:  # refused, reset or no answer: a failed readiness probe
            probe = type(exc).__name__
        time.sleep(1.0)
        lock.release()
    code = srv.process.wait(graceful + 10)
    exit_seconds = time.monotonic() - term_at
    load.join(timeout=120)
    rows = srv.rows()
    ok, missing = load.ok(), lost(load, rows)
    in_flight = [o for o in load.outcomes if o.sent_at < term_at < o.done_at]
    partial = [o for o in load.outcomes if o.error and o.error.startswith("partial")]
    figures(
        "shutdown", requests=len(load.outcomes), ok=len(ok), in_flight_at_sigterm=len(in_flight),
        in_flight_completed=sum(o.status == 201 for o in in_flight), partial=len(partial),
        refused_after=sum(1 for o in load.outcomes if o.error and o.sent_at > term_at),
        stored=len(rows), lost=len(missing), exit_code=code, exit_seconds=exit_seconds,
        graceful_timeout=graceful, readyz_after_sigterm=probe,
    )
    assert code == 0
    assert exit_seconds < graceful
    assert probe != 200
    assert len(in_flight) >= CONNECTIONS // 2
    assert all(o.status == 201 for o in in_flight), [o.error for o in in_flight if o.status != 201][:5]
    assert not partial
    assert len(rows) == len(ok) and not missing
    assert "Handling signal: term" in srv.log()


@pytest.mark.stress
def test_postgresql_restart_during_load_only_json_and_nothing_lost(servers):
    """The database restarts under 64 connections: every answer is JSON with "result"
    (201 or 503), the service recovers by itself, and no acknowledged charge is lost."""
    pg = postgres.PrivatePostgres().init()
    try:
        srv = servers(env=server_env(), database_url=pg.url())
        workers = srv.workers()
        load = Load(srv.port, total=20_000, connections=CONNECTIONS).start()
        wait_for(lambda: load.answered() >= 1000, 120, "1000 answers before the restart")
        restarted_at = time.monotonic()
        pg.restart()
        back_at = time.monotonic()
        # Enough answers, and traffic well past the recovery window checked below (on a
        # fast machine 3000 answers can come within the 2 s after the restart).
        wait_for(lambda: load.answered() >= 3000 and time.monotonic() > back_at + 5, 300, "answers after the restart")
        load.stop()
        load.join(timeout=120)
        rows = srv.rows()
        ok, missing = load.ok(), lost(load, rows)
        not_json = [o for o in load.outcomes if o.status is None or not isinstance((o.body or {}).get("result"), bool)]
        refused = [o for o in load.outcomes if o.status == 503]
        after = [o for o in load.outcomes if o.sent_at > back_at + 2]
        figures(
            "postgres-restart", requests=len(load.outcomes), ok=len(ok), storage_unavailable=len(refused),
            not_json=len(not_json), stored=len(rows), lost=len(missing), restart_seconds=back_at - restarted_at,
            ok_after_restart=sum(o.status == 201 for o in after), answered_after_restart=len(after),
            integrity=(integrity := postgres.amcheck(pg.superuser_url(), "payment_app_chargeattempt")),
        )
        assert not not_json, [o.error for o in not_json][:5]
        assert {o.status for o in load.outcomes} <= {201, 503}
        assert all(o.body["error"] == "storage_unavailable" for o in refused)
        assert not missing, missing[:5]
        assert len(rows) == len(ok)  # a 503 stored nothing
        assert after and all(o.status == 201 for o in after)  # recovered, without a restart of the service
        assert srv.workers() == workers
        assert integrity == "ok"
    finally:
        pg.destroy()


@pytest.mark.stress
def test_one_idempotency_key_across_servers_stores_one_row(servers):
    """32 concurrent requests with one key over two servers (4 worker processes): one row."""
    from tests.reliability.harness import charge_body, concurrently
    from harness.server import antaeus_request, send_raw

    url = postgres.create_database()
    first = servers("a", env={"WEB_CONCURRENCY": "2"}, database_url=url)
    second = servers("b", env={"WEB_CONCURRENCY": "2"}, database_url=url)
    for round_ in range(5):
        key = f"across-{round_}"
        ports = [first.port, second.port] * 16
        replies = concurrently(
            len(ports),
            lambda i: send_raw(ports[i], antaeus_request(charge_body(90 + round_), extra_headers={"Idempotency-Key": key})),
        )
        rows = first.query("SELECT id FROM payment_app_chargeattempt WHERE idempotency_key = %s", (key,))
        ids = {r.json()["id"] for r in replies}
        figures("idempotency-across-servers", round=round_ + 1, requests=len(replies), processes=4,
                rows=len(rows), distinct_ids=len(ids), statuses=sorted({r.status for r in replies}))
        assert len(rows) == 1 and ids == {rows[0][0]}
        assert {r.status for r in replies} == {201}
