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


def check_concurrent_load(srv, total: int) -> None:
    load = Load(srv.port, total=total, connections=CONNECTIONS).run(timeout=600)
    rows = srv.rows()
    ok, missing = load.ok(), lost(load, rows)
    locked = srv.log_count("database is locked")
    figures(
        "concurrency",
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
def test_concurrent_charges(servers):
    check_concurrent_load(servers(env=server_env()), total=5000)


@pytest.mark.stress
def test_sigkill_during_load_loses_no_acknowledged_charge(servers):
    srv = servers(env=server_env())
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
            "crash", round=round_ + 1, requests=len(load.outcomes), ok=len(ok),
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
