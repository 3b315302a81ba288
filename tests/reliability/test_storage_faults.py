"""Storage faults under the real server: the database directory gone, the file read-only,
the database locked by another process beyond the busy timeout.

During the fault every charge is a JSON 503 with result false (never an HTML page, never
a hung worker) and /readyz fails; once the fault is gone the same server recovers by
itself, on every worker thread, with no restart.
"""

import sys
import time

import pytest

from tests.reliability.harness import (
    DatabaseLock,
    charge_body,
    chattr_works,
    concurrently,
    figures,
    immutable,
    unique_customer,
)

pytestmark = pytest.mark.server

BUSY_TIMEOUT = 1.0
WORKERS, THREADS = 2, 4
# More simultaneous charges than worker threads: every thread's persistent connection is
# used before the fault and has to cope with it.
PARALLEL = WORKERS * THREADS * 2


@pytest.fixture
def server(servers):
    srv = servers(
        env={
            "SQLITE_BUSY_TIMEOUT_SECONDS": str(BUSY_TIMEOUT),
            "WEB_CONCURRENCY": str(WORKERS),
            "GUNICORN_THREADS": str(THREADS),
        }
    )
    burst(srv)  # warm every thread's connection
    return srv


def burst(server) -> list:
    def one(i):
        started = time.monotonic()
        reply = server.charge(charge_body(unique_customer()))
        return reply, time.monotonic() - started

    results = concurrently(PARALLEL, one)
    assert not [r for r in results if isinstance(r, Exception)], results
    return results


def assert_refused_during_fault(server, fault: str) -> dict:
    before = server.count() if fault != "missing-directory" else None
    results = burst(server)
    for reply, seconds in results:
        assert reply.status == 503, reply.body[:300]
        assert reply.headers["content-type"].startswith("application/json")
        body = reply.json()
        assert body == {"result": False, "error": "storage_unavailable", "reason": body["reason"]}
        # Not hung. Bound: a reconnect (its PRAGMAs) and the write may each wait out the busy
        # timeout, and in the worst case all PARALLEL requests queue on one worker's threads.
        assert seconds < BUSY_TIMEOUT * 2 * (PARALLEL // THREADS) + 2, seconds
    ready = server.get("/readyz", timeout=10)
    assert ready.status >= 500, ready.body
    assert server.get("/healthz").status == 200  # liveness stays up: no restart for a storage fault
    if before is not None:
        assert server.count() == before
    return {
        "requests": len(results),
        "answered_503": sum(r.status == 503 for r, _ in results),
        "max_seconds": max(s for _, s in results),
        "readyz": ready.status,
    }


def assert_recovers(server) -> dict:
    started = time.monotonic()
    deadline = started + 15
    while server.get("/readyz", timeout=10).status != 200:
        assert time.monotonic() < deadline, "not ready 15 s after the fault was removed"
        time.sleep(0.1)
    recovered = time.monotonic() - started
    before = server.rows()
    results = burst(server)
    assert [r.status for r, _ in results] == [201] * len(results), [r.body for r, _ in results if r.status != 201]
    rows = server.rows()
    assert len(rows) == len(before) + len(results)
    assert all(r.json()["id"] in rows for r, _ in results)
    assert server.integrity() == "ok"
    return {"recovered_seconds": recovered, "after_requests": len(results), "after_ok": len(results)}


def test_database_directory_missing(server):
    stored = server.count()
    away = server.database.parent.with_name("db-away")
    server.database.parent.rename(away)
    try:
        during = assert_refused_during_fault(server, "missing-directory")
        assert "database file moved or missing" in server.log()
    finally:
        away.rename(server.database.parent)
    assert server.count() == stored  # nothing written anywhere meanwhile
    after = assert_recovers(server)
    figures("storage-fault", fault="missing-directory", **during, **after)


def test_database_read_only(server):
    directory = server.database.parent
    if reason := chattr_works(server.data_dir):
        pytest.skip(f"cannot make a file read-only for root here: {reason}")
    # The database, its WAL and the directory (so no file in it can be created or
    # replaced). The -shm index stays writable: SQLite maps it into memory, and making
    # it immutable kills the process with SIGBUS instead of giving an error.
    paths = [server.database, server.database.with_name(server.database.name + "-wal"), directory]
    assert all(p.exists() for p in paths)
    immutable(paths, True)
    try:
        with pytest.raises(PermissionError):  # really read-only, even for root
            server.database.open("r+b").close()
        during = assert_refused_during_fault(server, "read-only")
    finally:
        immutable(paths, False)
    after = assert_recovers(server)
    figures("storage-fault", fault="read-only", **during, **after)


def test_database_locked_longer_than_the_busy_timeout(server):
    with DatabaseLock(server.database, sys.executable) as lock:
        during = assert_refused_during_fault(server, "locked")
        assert "database is locked" in server.log()
        lock.release()
    after = assert_recovers(server)
    figures("storage-fault", fault="locked", busy_timeout=BUSY_TIMEOUT, **during, **after)
