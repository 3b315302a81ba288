"""Metrics of the real server: 4 gunicorn workers, one scrape of the metrics port sums them.

Known numbers of each kind of charge go in, exactly those counts come out; a worker
killed with SIGKILL and respawned does not make any counter go down; the charge port
does not serve metrics and the metrics port serves nothing else.
"""

import os
import signal
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.harness import DatabaseLock
from harness.server import Server, antaeus_request, send_raw

pytestmark = pytest.mark.server

WORKERS = 4


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, for every sample of the exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def charges(found: dict, outcome: str, error: str = "") -> float:
    return found.get(("payment_charges_total", (("error", error), ("outcome", outcome))), 0.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(
        tmp_path_factory.mktemp("metrics"),
        env={"WEB_CONCURRENCY": str(WORKERS), "SQLITE_BUSY_TIMEOUT_SECONDS": "0.3"},
    )
    srv.start()
    yield srv
    srv.stop()


def spread(server: Server, count: int, body: bytes, **kwargs) -> list:
    """`count` charges, each on its own connection, so reuse_port spreads them over the workers."""
    return [send_raw(server.port, antaeus_request(body, **kwargs)) for _ in range(count)]


def test_one_scrape_counts_every_workers_charges_exactly(server):
    before = samples(server.metrics())
    replies = spread(server, 60, b'{"currency":{},"customer_id":1,"value":301.99}')
    assert {r.status for r in replies} == {201}
    succeeded = sum(r.json()["result"] is True for r in replies)
    declined = sum(r.json()["result"] is False for r in replies)
    assert succeeded and declined  # PAYMENT_SUCCESS_RATE 0.5: both kinds, or the test proves little

    invalid = spread(server, 7, b'{"currency":{},"customer_id":"1","value":301.99}')
    unparsable = spread(server, 5, b'{"currency":{},"customer_id":1,')
    keyed = spread(server, 4, b'{"customer_id":2,"value":10}', extra_headers={"Idempotency-Key": "metrics-k1"})
    reused = spread(server, 3, b'{"customer_id":2,"value":11}', extra_headers={"Idempotency-Key": "metrics-k1"})
    assert [r.status for r in invalid + unparsable + reused] == [400] * 12 + [422] * 3
    assert len({r.json()["id"] for r in keyed}) == 1  # one attempt, three replays
    first_keyed = keyed[0].json()["result"]

    after = samples(server.metrics())

    def delta(outcome, error=""):
        return charges(after, outcome, error) - charges(before, outcome, error)

    assert delta("succeeded") == succeeded + first_keyed
    assert delta("declined") == declined + (not first_keyed)
    assert delta("rejected", "validation_error") == 7
    assert delta("rejected", "parse_error") == 5
    assert delta("rejected", "idempotency_key_reused") == 3
    assert delta("storage_unavailable", "storage_unavailable") == 0
    replays = after[("payment_charge_replays_total", ())] - before.get(("payment_charge_replays_total", ()), 0)
    assert replays == 3
    total = 60 + 7 + 5 + 4 + 3
    timed = after[("payment_charge_duration_seconds_count", ())] - before.get(
        ("payment_charge_duration_seconds_count", ()), 0
    )
    assert timed == total
    assert after[("payment_success_rate_configured", ())] == 0.5
    # Every worker answered some of them: the sum really is over processes.
    pids = {path.name.split("_")[-1] for path in (server.data_dir / "metrics").glob("counter_*.db")}
    assert len(pids & {f"{pid}.db" for pid in server.workers()}) == WORKERS


@pytest.mark.sqlite_only("another process holds SQLite's write lock (PostgreSQL outages: test_postgres.py)")
def test_charges_refused_for_storage_are_counted(server):
    before = samples(server.metrics())
    with DatabaseLock(server.database, sys.executable):
        locked = spread(server, 2, b'{"customer_id":1,"value":5}')
    assert [r.status for r in locked] == [503, 503]
    after = samples(server.metrics())
    assert charges(after, "storage_unavailable", "storage_unavailable") - charges(
        before, "storage_unavailable", "storage_unavailable") == 2
    timed = ("payment_charge_duration_seconds_count", ())
    assert after[timed] - before.get(timed, 0) == 2


def test_readiness_is_exported(server):
    assert server.get("/readyz").status == 200
    assert samples(server.metrics())[("payment_ready", ())] == 1.0


@pytest.mark.sqlite_only("another process holds SQLite's write lock (PostgreSQL outages: test_postgres.py)")
def test_unreadiness_is_exported(server):
    assert server.get("/readyz").status == 200
    with DatabaseLock(server.database, sys.executable):
        assert server.get("/readyz").status == 503
        assert samples(server.metrics())[("payment_ready", ())] == 0.0
    assert server.get("/readyz").status == 200
    assert samples(server.metrics())[("payment_ready", ())] == 1.0


def test_http_and_process_metrics(server):
    server.get("/healthz")
    found = samples(server.metrics())
    assert found[("payment_http_requests_total", (("method", "GET"), ("route", "healthz"), ("status", "200")))] >= 1
    assert found[("process_resident_memory_bytes", ())] > 0
    # Each live worker's own process metrics, by pid.
    rss = {dict(labels)["pid"]: value for (name, labels), value in found.items()
           if name == "payment_worker_resident_memory_bytes"}
    assert set(rss) == {str(pid) for pid in server.workers()} and min(rss.values()) > 0
    assert ("payment_http_request_duration_seconds_bucket", (("le", "+Inf"), ("route", "charge-create"))) in found


def test_a_killed_worker_never_makes_a_counter_go_down(server):
    spread(server, 20, b'{"currency":{},"customer_id":1,"value":1}')
    before = samples(server.metrics())
    victims = sorted(server.workers())[:2]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (set(victims) & server.workers() or len(server.workers()) < WORKERS):
        time.sleep(0.1)
    server.wait_workers()
    respawned = samples(server.metrics())
    spread(server, 8, b'{"currency":{},"customer_id":1,"value":1}')
    later = samples(server.metrics())
    # The service's counters (not the per-pid process series of payment_worker_*, which
    # end with their worker, as a process's own counters do).
    counters = [key for key in before if key[0].endswith(("_total", "_count", "_sum", "_bucket"))
                and key[0].startswith("payment_") and not key[0].startswith("payment_worker_")]
    assert counters
    for key in counters:
        assert respawned.get(key, 0) >= before[key], key
        assert later.get(key, 0) >= respawned.get(key, 0), key
    assert charges(later, "succeeded") + charges(later, "declined") == (
        charges(before, "succeeded") + charges(before, "declined") + 8
    )


def test_ports_serve_only_their_own(server):
    on_charge_port = server.get("/metrics")
    assert on_charge_port.status == 404 and on_charge_port.json()["result"] is False
    raw = antaeus_request(host="localhost", path="/api/v1/charges")
    reply = send_raw(server.metrics_port, raw)
    assert reply.status == 405, reply  # no charge API here: GET /metrics only
    assert "payment_charges_total" in server.metrics()
