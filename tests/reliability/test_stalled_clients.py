"""Stalled and trickling clients against the service as the pod runs it: nginx
(base/payment/nginx.conf) in front of gunicorn at the deployed 2 workers x 1 thread.

Without nginx, each such client holds one of the two worker threads (partial headers for
as long as the client likes): docs/reliability.md has the figures.
"""

from __future__ import annotations

import pathlib
import re
import resource
import socket
import time

import pytest

from harness import stalls
from benchmarks.servers import children
from harness.server import ANTAEUS_HOST, NGINX_CONF, Server, antaeus_request, read_reply, send_raw
from tests.reliability.test_hostile_input import CASES

pytestmark = pytest.mark.server

WORKER_THREADS = 2  # WEB_CONCURRENCY x GUNICORN_THREADS, the deployed defaults
PER_KIND = 4  # 5 kinds x 4 = 20 connections: 10 per worker thread


def _proxied(data_dir):
    return Server(data_dir, env={"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "1"}, proxy=True)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    server = _proxied(tmp_path_factory.mktemp("proxied"))
    try:
        yield server.start()
    finally:
        server.close()


def test_valid_charges_are_answered_quickly_while_stalled_clients_hold_connections(proxied):
    kinds = {kind: PER_KIND for kind in stalls.KINDS}
    assert sum(kinds.values()) >= 5 * WORKER_THREADS
    probe = stalls.probe(proxied.port, kinds, charges=10)
    print(f"\nbehind nginx, 2 workers x 1 thread: {probe.describe()}")
    assert probe.statuses == [201] * 10
    # Generous for a loaded machine: unprotected, a charge here waits for the 5 s body
    # timeout at best and forever behind partial headers.
    assert probe.worst_s < 2.0, probe.describe()


def test_a_stalled_client_is_cut_off_at_the_timeout(proxied):
    """nginx resets a connection whose headers, or a gap in whose body, outlast 5 s
    (reset_timedout_connection: its memory is freed at once)."""
    for first in (stalls.KINDS["headers-stalled"][0], stalls.KINDS["body-stalled"][0]):
        with socket.create_connection(("127.0.0.1", proxied.port), timeout=20) as sock:
            sock.sendall(first)
            started = time.monotonic()
            with pytest.raises(ConnectionResetError):  # without an answer (nobody is reading)
                sock.recv(4096)
            assert 4.0 < time.monotonic() - started < 10.0


@pytest.mark.parametrize(("raw", "status"), [
    # Over client_max_body_size: refused by nginx before the body is read.
    (antaeus_request(b"{" + b" " * 20_000 + b"}"), 413),
    # Not HTTP.
    (b"\x16\x03\x01\x00\x00 garbage\r\n\r\n", 400),
])
def test_errors_nginx_answers_itself_are_the_service_error_shape(proxied, raw, status):
    reply = send_raw(proxied.port, raw, timeout=10)
    assert reply.status == status
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["result"] is False and body["error"] and body["reason"]


def test_the_service_answers_pass_through_nginx_unchanged(proxied):
    """Keep-alive as Antaeus uses it, the service's own JSON errors, and the Host check."""
    with socket.create_connection(("127.0.0.1", proxied.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(antaeus_request())
            reply = read_reply(sock)
            assert reply.status == 201 and isinstance(reply.json()["result"], bool)
    assert send_raw(proxied.port, antaeus_request(b'{"customer_id":"1"}')).json()["error"] == "validation_error"
    assert send_raw(proxied.port, antaeus_request(host="evil.example")).json()["error"] == "disallowed_host"
    assert send_raw(proxied.port, antaeus_request(b"{" + b" " * 5000 + b"}")).json()["error"] == "payload_too_large"
    assert ANTAEUS_HOST.startswith("payment.")


def test_gunicorn_down_is_a_json_503(tmp_path):
    server = _proxied(tmp_path).start()
    try:
        server.stop()
        reply = send_raw(server.port, antaeus_request(), timeout=10)
    finally:
        server.close()
    assert reply.status == 503
    assert reply.json()["result"] is False


@pytest.mark.parametrize(("case", "raw", "status", "error"), CASES, ids=[case[0] for case in CASES])
def test_hostile_requests_get_the_same_json_refusal_through_nginx(proxied, case, raw, status, error):
    """nginx passes the service's refusals on unchanged (test_hostile_input.py's table)."""
    reply = send_raw(proxied.port, raw, timeout=10, method="HEAD" if raw.startswith(b"HEAD") else "POST")
    assert reply.status == status, reply.body[:300]
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["result"] is False and reply.json()["error"] == error


def _rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


@pytest.mark.stress
def test_hundreds_of_stalled_clients_cost_nginx_memory_not_charges(tmp_path):
    """400 stalled and trickling connections (200 per worker thread): what they cost nginx,
    and that valid charges are still answered at once."""
    server = _proxied(tmp_path).start()
    try:
        (nginx_worker,) = children(server.nginx.pid)
        before = _rss_kib(nginx_worker)
        kinds = {kind: 80 for kind in stalls.KINDS}
        with stalls.Stallers(server.port, kinds) as held:
            time.sleep(1.0)
            held_rss = _rss_kib(nginx_worker)
            latencies = [stalls.timed_charge(server.port) for _ in range(10)]
        worst = max(latency for latency, _ in latencies)
        print(f"\nstalled-clients: held={len(held.sockets)} nginx_worker_rss_kib_before={before} "
              f"nginx_worker_rss_kib_held={held_rss} per_connection_kib={(held_rss - before) / len(held.sockets):.1f} "
              f"charges=10 worst_ms={worst * 1000:.1f}")
        assert [status for _, status in latencies] == [201] * 10
        assert worst < 2.0
    finally:
        server.close()


def _nginx_limit(name: str) -> int:
    """The charge port's limit (its server block comes first)."""
    return int(re.findall(rf"^\s*limit_conn {name} (\d+);", NGINX_CONF.read_text(), re.M)[0])


def _raise_open_files(wanted: int) -> None:
    """Thousands of connections: this process's and nginx's (its child's) descriptor limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


SLOW_BODIES = 2000


@pytest.mark.stress
def test_thousands_of_slow_bodies_cannot_stop_valid_charges(tmp_path):
    """2,000 connections trickling a charge's body (a byte every 2 s, under the 5 s body
    timeout) from one client: nginx holds `per_client` of them and refuses the rest at
    once with a JSON 429; valid charges from another client are answered as usual. Then
    from 40 clients: nginx holds `total` in all, and what it cannot hold is a JSON 429,
    never a reset (docs/reliability.md, "Slow bodies")."""
    per_client, total = _nginx_limit("per_client"), _nginx_limit("total")
    _raise_open_files(3 * SLOW_BODIES + 1024)
    server = _proxied(tmp_path).start()
    try:
        (nginx_worker,) = children(server.nginx.pid)
        rss_before = _rss_kib(nginx_worker)
        with stalls.SlowBodies(server.port, SLOW_BODIES) as one_client:
            held = one_client.settle()
            rss_held = _rss_kib(nginx_worker)
            # Spread over more than the body timeout: the held ones stay held by trickling.
            charges = []
            for _ in range(20):
                charges.append(stalls.timed_charge(server.port))
                time.sleep(0.4)
            still_held = len(one_client.held)
            refused = list(one_client.refused)
            reset = one_client.reset
        sources = tuple(f"127.0.0.{n}" for n in range(2, 42))
        with stalls.SlowBodies(server.port, SLOW_BODIES, sources=sources) as many_clients:
            held_in_all = many_clients.settle()
            rss_full = _rss_kib(nginx_worker)
            charge_when_full = send_raw(server.port, antaeus_request(), timeout=10)
            reset_in_all = many_clients.reset
            refused_in_all = list(many_clients.refused)
        after = [stalls.timed_charge(server.port) for _ in range(5)]
    finally:
        server.close()
    worst = max(latency for latency, _ in charges)
    print(f"\nslow-bodies: one_client={SLOW_BODIES} held={held} still_held_after_10s={still_held} "
          f"refused_429={len(refused)} reset={reset} nginx_worker_rss_kib_before={rss_before} "
          f"nginx_worker_rss_kib_held={rss_held} charges={len(charges)} "
          f"ok={sum(status == 201 for _, status in charges)} worst_ms={worst * 1000:.1f} | "
          f"forty_clients={SLOW_BODIES} held={held_in_all} refused_429={len(refused_in_all)} reset={reset_in_all} "
          f"nginx_worker_rss_kib_held={rss_full} charge_when_full={charge_when_full.status}")
    assert held == still_held == per_client
    assert reset == 0 and len(refused) == SLOW_BODIES - per_client
    assert all(status == 429 and body["result"] is False for status, body in refused), refused[:3]
    assert [status for _, status in charges] == [201] * len(charges)
    assert worst < 2.0
    # Forty clients can fill the total; what does not fit is still an answer, JSON.
    assert held_in_all == total and reset_in_all == 0
    assert all(status == 429 and body["result"] is False for status, body in refused_in_all)
    assert charge_when_full.status == 429 and charge_when_full.json()["result"] is False
    assert [status for _, status in after] == [201] * 5  # and all is well once they are gone
