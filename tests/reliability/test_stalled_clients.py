"""Stalled and trickling clients against the service as the pod runs it: nginx
(base/payment/nginx.conf) in front of gunicorn at the deployed 2 workers x 1 thread.

Without nginx, each such client holds one of the two worker threads (partial headers for
as long as the client likes): docs/reliability.md has the figures.
"""

from __future__ import annotations

import pathlib
import socket
import time

import pytest

from harness import stalls
from benchmarks.servers import children
from harness.server import ANTAEUS_HOST, Server, antaeus_request, read_reply, send_raw
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
