"""Idempotency-Key over the real server: replays, conflicts, and one key raced from many
connections across several gunicorn workers."""

from decimal import Decimal

import pytest

from tests.reliability.harness import FaultServer, charge_body, concurrently, figures
from harness.server import antaeus_request, send_raw

pytestmark = pytest.mark.server

WORKERS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = FaultServer(tmp_path_factory.mktemp("idempotency"), env={"WEB_CONCURRENCY": str(WORKERS)})
    try:
        yield srv.start()
    finally:
        srv.stop()


def keyed(port: int, key: str, body: bytes):
    return send_raw(port, antaeus_request(body, extra_headers={"Idempotency-Key": key}), timeout=30)


def attempts_with_key(server, key: str) -> list[tuple]:
    with server.db() as db:
        rows = db.execute(
            "SELECT id, customer_id, amount, succeeded FROM payment_app_chargeattempt WHERE idempotency_key = %s", (key,)
        ).fetchall()
    # As the API answers them, whichever backend stored them.
    return [(i, c, Decimal(str(amount)), bool(s)) for i, c, amount, s in rows]


def test_repeat_replays_the_stored_response_and_creates_nothing(server):
    first = keyed(server.port, "invoice-1-try", charge_body(7, "301.99"))
    assert first.status == 201
    # The same parameters written differently (key order, spacing, trailing zero).
    again = keyed(server.port, "invoice-1-try", b'{ "value": 301.990, "customer_id": 7, "currency": {} }')
    assert (again.status, again.json()) == (first.status, first.json())
    assert attempts_with_key(server, "invoice-1-try") == [(first.json()["id"], 7, Decimal("301.99"), first.json()["result"])]


def test_declined_charge_replays_as_declined(server):
    # With a 0.5 success rate some key gets a false outcome within a few tries; replaying it
    # must not turn it into a new attempt that might succeed.
    for n in range(64):
        key = f"declined-{n}"
        first = keyed(server.port, key, charge_body(8))
        if first.json()["result"] is False:
            break
    else:
        pytest.fail("no declined charge in 64 tries at PAYMENT_SUCCESS_RATE=0.5")
    replays = [keyed(server.port, key, charge_body(8)).json() for _ in range(5)]
    assert all(r == first.json() for r in replays)
    assert len(attempts_with_key(server, key)) == 1


def test_same_key_other_body_is_refused_and_nothing_stored(server):
    first = keyed(server.port, "conflict", charge_body(9, "10"))
    before = server.count()
    other = keyed(server.port, "conflict", charge_body(9, "10.01"))
    assert other.status == 422
    body = other.json()
    assert body["result"] is False and body["error"] == "idempotency_key_reused"
    assert server.count() == before
    assert attempts_with_key(server, "conflict") == [(first.json()["id"], 9, Decimal("10"), first.json()["result"])]


def test_without_a_key_every_request_is_a_new_attempt(server):
    ids = {server.charge(charge_body(10)).json()["id"] for _ in range(3)}
    assert len(ids) == 3


def test_concurrent_requests_with_one_key_make_exactly_one_attempt(server):
    racers = 32
    body = charge_body(11, "55.55")
    replies = concurrently(racers, lambda i: keyed(server.port, "raced-key", body))
    assert not [r for r in replies if isinstance(r, Exception)]
    assert {r.status for r in replies} == {201}
    answers = {(r.json()["id"], r.json()["result"]) for r in replies}
    stored = attempts_with_key(server, "raced-key")
    assert len(answers) == 1 and len(stored) == 1
    assert stored[0][0] == next(iter(answers))[0]
    figures("idempotency-race", requests=racers, workers=WORKERS, distinct_answers=len(answers), stored=len(stored))


def test_concurrent_requests_with_one_key_and_different_bodies(server):
    racers = 16
    replies = concurrently(racers, lambda i: keyed(server.port, "raced-conflict", charge_body(12, f"{i + 1}.00")))
    assert not [r for r in replies if isinstance(r, Exception)]
    stored = attempts_with_key(server, "raced-conflict")
    winners = [r for r in replies if r.status == 201]
    assert len(stored) == 1 and len(winners) == 1 and winners[0].json()["id"] == stored[0][0]
    assert sorted(r.status for r in replies) == [201] + [422] * (racers - 1)
    assert all(r.json()["result"] is False for r in replies if r.status == 422)


def test_longest_key_is_kept_and_replayed(server):
    key = "k" * 255
    first = keyed(server.port, key, charge_body(13))
    assert first.status == 201
    assert keyed(server.port, key, charge_body(13)).json() == first.json()
