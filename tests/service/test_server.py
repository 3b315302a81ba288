"""The real server: scripts/entrypoint starting gunicorn, spoken to over raw HTTP as Antaeus does."""

import signal
import socket
import stat

import pytest

from harness.server import (
    ANTAEUS_BODY,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    Server,
    antaeus_request,
    read_reply,
    send_raw,
    socket_inodes,
    tcp_sockets,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server"))
    collected = srv.run("python", "manage.py", "collectstatic", "--noinput", "--verbosity", "0")
    assert collected.returncode == 0, collected.stderr
    srv.start()
    yield srv
    srv.stop()


def test_antaeus_request_is_answered_and_recorded(server):
    reply = server.charge()
    assert reply.status == 201
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert isinstance(body["result"], bool)
    with server.db() as db:
        row = db.execute(
            "SELECT customer_id, amount, currency, succeeded FROM payment_app_chargeattempt WHERE id = ?",
            (body["id"],),
        ).fetchone()
    assert row == (1, 301.99, "", int(body["result"]))


def test_sequential_charges_on_one_kept_alive_connection(server):
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        ids = []
        for value in (b"120.5", b"100", b"42.42"):
            sock.sendall(antaeus_request(b'{"currency":{},"customer_id":2,"value":' + value + b"}"))
            reply = read_reply(sock)
            assert reply.status == 201
            ids.append(reply.json()["id"])
    assert ids == sorted(ids) and len(set(ids)) == 3


@pytest.mark.parametrize(
    "raw, status, error",
    [
        (antaeus_request(b'{"customer_id":1,'), 400, "parse_error"),
        (antaeus_request(b'{"customer_id":1,"value":"1"}'), 400, "validation_error"),
        (antaeus_request(host="attacker.example"), 400, "disallowed_host"),
        (antaeus_request(path="/api/v1/charge"), 404, "not_found"),
        (antaeus_request(b"x" * 5000), 413, "payload_too_large"),
        (b"GET /api/v1/charges HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
        (b"PUT /api/v1/charges HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
         405, "method_not_allowed"),
        (antaeus_request(extra_headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    ],
    ids=["malformed", "wrong-type", "bad-host", "bad-path", "too-large", "get", "put", "text-plain"],
)
def test_errors_over_http_are_json_objects_with_result_false(server, raw, status, error):
    reply = send_raw(server.port, raw)
    assert reply.status == status
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["result"] is False and body["error"] == error and body["reason"]
    # The worker is still there: the next valid charge goes through.
    assert server.charge().status == 201


def test_probes_answer(server):
    assert server.get("/healthz").status == 200
    ready = server.get("/readyz")
    assert ready.status == 200 and set(ready.json().values()) == {"OK"}


def test_admin_and_its_static_files_are_served(server):
    assert server.get("/admin/login/").status == 200
    css = server.get("/static/admin/css/base.css")
    assert css.status == 200 and b"body" in css.body


def test_secret_key_is_generated_once_and_private(server):
    key_file = server.data_dir / "secret_key"
    first = key_file.read_text()
    assert len(first.strip()) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert server.run("true").returncode == 0
    assert key_file.read_text() == first


def test_admin_user_from_environment_is_created_once(tmp_path):
    srv = Server(tmp_path)
    env = {"DJANGO_SUPERUSER_USERNAME": "ops", "DJANGO_SUPERUSER_PASSWORD": "a-long-test-password"}
    first = srv.run("true", extra_env=env)
    assert first.returncode == 0, first.stderr
    assert "superuser 'ops' created" in first.stdout
    again = srv.run("true", extra_env=env)
    assert again.returncode == 0, again.stderr
    assert "superuser 'ops' exists; left unchanged" in again.stdout
    with srv.db() as db:
        assert db.execute("SELECT COUNT(*) FROM auth_user WHERE username='ops' AND is_superuser").fetchone() == (1,)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PAYMENT_SUCCESS_RATE": "1.5"}, "PAYMENT_SUCCESS_RATE must be between 0 and 1, got 1.5"),
        ({"PAYMENT_SUCCESS_RATE": "half"}, "PAYMENT_SUCCESS_RATE must be a number, got 'half'"),
        ({"PAYMENT_RANDOM_SEED": "x"}, "PAYMENT_RANDOM_SEED must be an integer"),
        ({"DJANGO_SECRET_KEY_FILE": ""}, "Set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE"),
    ],
)
def test_bad_configuration_refuses_to_start_with_a_clear_message(tmp_path, env, message):
    srv = Server(tmp_path, env=env)
    srv.start(wait=False)
    assert srv.process.wait(60) != 0
    assert message in srv.log()


def test_sigterm_stops_the_server_gracefully(tmp_path):
    srv = Server(tmp_path).start()
    assert srv.charge(ANTAEUS_BODY).status == 201
    srv.signal(signal.SIGTERM)
    assert srv.process.wait(30) == 0
    log = srv.log()
    assert "Handling signal: term" in log and "Shutting down: Master" in log


def test_each_worker_listens_on_its_own_socket_and_connections_spread(server):
    """reuse_port: the kernel spreads new connections over the workers' sockets. On one
    shared socket, kept-alive connections can all land on one worker (docs/performance.md)."""
    workers = server.workers()
    assert len(workers) == 2
    connections = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(32)]
    try:
        for sock in connections:
            sock.sendall(antaeus_request())
        for sock in connections:
            assert read_reply(sock).status == 201
        states = tcp_sockets(server.port)
        listening = {pid: [i for i in socket_inodes(pid) if states.get(i) == TCP_LISTEN] for pid in workers}
        established = {pid: [i for i in socket_inodes(pid) if states.get(i) == TCP_ESTABLISHED] for pid in workers}
    finally:
        for sock in connections:
            sock.close()
    assert all(len(own) == 1 for own in listening.values()), listening
    assert len({own[0] for own in listening.values()}) == 2  # two sockets, not one inherited
    assert sorted(len(own) for own in established.values())[0] >= 4, established  # 32 split by hash
