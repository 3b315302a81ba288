"""The real server: scripts/entrypoint starting gunicorn, spoken to over raw HTTP as Antaeus does."""

import json
import logging
import re
import os
import signal
from decimal import Decimal
import socket
import stat
import subprocess
import time

import pytest

from tests.browser import Browser
from harness.server import (
    ANTAEUS_BODY,
    REPO,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    Server,
    antaeus_request,
    free_port,
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
            "SELECT customer_id, amount, currency, succeeded FROM payment_app_chargeattempt WHERE id = %s",
            (body["id"],),
        ).fetchone()
    customer_id, amount, currency, succeeded = row
    assert (customer_id, Decimal(str(amount)), currency, bool(succeeded)) == (1, Decimal("301.99"), "", body["result"])


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
    assert "operator 'ops' created (view charge attempts only)" in first.stdout
    again = srv.run("true", extra_env=env)
    assert again.returncode == 0, again.stderr
    assert "operator 'ops' exists; password unchanged" in again.stdout
    with srv.db() as db:
        row = db.execute("SELECT is_staff, is_superuser FROM auth_user WHERE username='ops'").fetchone()
    assert tuple(map(bool, row)) == (True, False)  # staff, not a superuser (booleans are 0/1 in SQLite)


def test_a_weak_admin_password_stops_the_start_with_one_clear_line(tmp_path):
    srv = Server(tmp_path)
    run = srv.run("true", extra_env={"DJANGO_SUPERUSER_USERNAME": "ops", "DJANGO_SUPERUSER_PASSWORD": "x"})
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "DJANGO_SUPERUSER_PASSWORD is refused by AUTH_PASSWORD_VALIDATORS" in errors[0], run.stderr
    assert "too short" in errors[0]
    with srv.db() as db:
        assert db.execute("SELECT COUNT(*) FROM auth_user").fetchone() == (0,)


def test_admin_password_follows_the_secret_at_the_next_start(tmp_path):
    """As in the cluster: the Secret's keys are files named by *_FILE variables. A new
    password there is applied by the next start, an unchanged one leaves the stored hash
    as it is, and no start prints either password."""
    from django.contrib.auth.hashers import check_password

    srv = Server(tmp_path / "server")
    secret = tmp_path / "secret"
    secret.mkdir()
    env = {"DJANGO_SUPERUSER_USERNAME_FILE": str(secret / "username"),
           "DJANGO_SUPERUSER_PASSWORD_FILE": str(secret / "password")}
    old, new = "first-admin-password-9f3k", "rotated-admin-password-x81q"

    def start(password: str | None) -> tuple[str, str]:
        (secret / "username").write_text("ops")  # no trailing newline, as a Secret key
        if password is None:
            (secret / "password").unlink(missing_ok=True)
        else:
            (secret / "password").write_text(password)
        run = srv.run("true", extra_env=env)
        assert run.returncode == 0, run.stderr
        for value in (old, new):
            assert value not in run.stdout + run.stderr
        with srv.db() as db:
            (stored,) = db.execute("SELECT password FROM auth_user WHERE username='ops'").fetchone()
        assert stored not in run.stdout + run.stderr
        return run.stdout, stored

    out, created = start(old)
    assert "operator 'ops' created" in out and check_password(old, created)

    out, unchanged = start(old)
    assert "operator 'ops' exists; password unchanged" in out
    assert unchanged == created, "same password: the stored hash (and its salt) is left alone"

    out, rotated = start(new)
    assert "operator 'ops' exists; password changed" in out
    assert check_password(new, rotated) and not check_password(old, rotated)

    # A Secret without the password key never blanks or replaces the real one.
    out, kept = start(None)
    assert "password unchanged" in out and kept == rotated


def test_no_admin_secret_means_no_admin_user_and_a_normal_start(tmp_path):
    srv = Server(tmp_path)
    missing = tmp_path / "no-secret"
    run = srv.run("true", extra_env={"DJANGO_SUPERUSER_USERNAME_FILE": str(missing / "username"),
                                     "DJANGO_SUPERUSER_PASSWORD_FILE": str(missing / "password")})
    assert run.returncode == 0, run.stderr
    assert "operator" not in run.stdout
    with srv.db() as db:
        assert db.execute("SELECT COUNT(*) FROM auth_user").fetchone() == (0,)


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


def test_a_database_url_that_is_not_postgresql_refuses_to_start_without_quoting_it(tmp_path):
    srv = Server(tmp_path, env={"DATABASE_URL": "mysql://payment:not-this-password@db:3306/payment"})
    srv.start(wait=False)
    assert srv.process.wait(60) != 0
    log = srv.log()
    assert "DATABASE_URL must be a PostgreSQL URL" in log
    assert "not-this-password" not in log


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


def test_master_logs_the_address_it_serves(server):
    messages = [record.get("message", "") for record in server.log_records()]
    assert f"Listening at: http://127.0.0.1:{server.port}" in messages
    # gunicorn's own line has no address with reuse_port (the master holds no socket).
    assert not any(m.startswith("Listening at:  (") for m in messages), messages


def test_make_run_installs_only_what_serving_needs_and_starts_once():
    """As make would run on a fresh clone (-B: every target out of date), without running it."""
    dry = subprocess.run(["make", "-n", "-B", "run"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    installs = [line for line in dry.splitlines() if "pip install" in line]
    assert installs and all("--require-hashes -r requirements/run.txt" in line for line in installs), dry
    assert dry.count("scripts/entrypoint") == 1, dry


def test_make_run_serves_through_one_start_up(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "METRICS_PORT": str(free_port()),  # never the default 9000, which other software may hold
        "DATABASE_PATH": str(tmp_path / "payment.sqlite3"),
        "DJANGO_SECRET_KEY_FILE": str(tmp_path / "secret_key"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "DJANGO_SUPERUSER_USERNAME": "ops",
        "DJANGO_SUPERUSER_PASSWORD": "a-long-test-password",
    }
    env.pop("DJANGO_SECRET_KEY", None)  # the test environment's; make run makes its own
    env.pop("DATABASE_URL", None)  # make run is SQLite by default, whatever this run's backend is
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert make.poll() is None, log_path.read_text()
            try:
                if send_raw(port, b"GET /admin/login/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                            timeout=2, method="GET").status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"make run did not serve within 120 s:\n{log_path.read_text()}")
        css = send_raw(port, b"GET /static/admin/css/base.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                       timeout=5, method="GET")
        assert css.status == 200  # collected in the same start-up
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
        make.wait(60)
    log = log_path.read_text()
    assert log.count("generated a new secret key file") == 1, log
    assert log.count("Operations to perform") == 1, log  # migrations once
    assert log.count("operator 'ops' created") == 1, log
    assert f"Listening at: http://127.0.0.1:{port}" in log, log


def test_a_taken_metrics_port_stops_the_start_with_one_line_naming_metrics_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = Server(tmp_path, metrics_port=taken.getsockname()[1])
        srv.start(wait=False)
        try:
            assert srv.process.wait(60) == 1, srv.log()
        finally:
            srv.stop()
    log = srv.log()
    assert "Traceback" not in log, log
    errors = [r for r in srv.log_records() if r.get("level") == "ERROR"]
    assert len(errors) == 1, log
    message = errors[0]["message"]
    assert "METRICS_PORT" in message and str(srv.metrics_port) in message, message


def test_chunked_body_is_refused_with_a_clear_json_411(server):
    with server.db() as db:
        before = db.execute("SELECT COUNT(*) FROM payment_app_chargeattempt").fetchone()[0]
    chunked = (
        b"POST /api/v1/charges HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n" % len(ANTAEUS_BODY) + ANTAEUS_BODY + b"\r\n0\r\n\r\n"
    )
    reply = send_raw(server.port, chunked)
    assert reply.status == 411 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["result"] is False and body["error"] == "length_required"
    assert "Content-Length" in body["reason"]
    with server.db() as db:
        assert db.execute("SELECT COUNT(*) FROM payment_app_chargeattempt").fetchone()[0] == before


# What gunicorn refuses before Django sees the request, in the service's JSON error shape
# (gunicorn.conf.py replaces its HTML page): the exact set README.md and
# docs/reliability.md list ("What gunicorn refuses itself").
_HEAD = b"Host: localhost\r\nContent-Type: application/json\r\n"
_LENGTH = b"Content-Length: %d\r\n" % len(ANTAEUS_BODY)
GUNICORN_REFUSALS = [
    ("lower-case-method", b"post /api/v1/charges HTTP/1.1\r\n" + _HEAD + _LENGTH + b"\r\n" + ANTAEUS_BODY, 400),
    ("http-version", b"POST /api/v1/charges HTTP/9.9\r\n" + _HEAD + _LENGTH + b"\r\n" + ANTAEUS_BODY, 400),
    ("garbage-line", b"hello\r\n\r\n", 400),
    ("space-in-header-name", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"Bad Name: x\r\n" + _LENGTH + b"\r\n", 400),
    ("header-without-colon", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"NoColon\r\n" + _LENGTH + b"\r\n", 400),
    ("nul-in-header", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"X-A: a\x00b\r\n" + _LENGTH + b"\r\n", 400),
    ("line-folding", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"X-A: 1\r\n  2\r\n" + _LENGTH + b"\r\n", 400),
    ("two-lengths", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + _LENGTH + _LENGTH + b"\r\n" + ANTAEUS_BODY, 400),
    ("signed-length", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"Content-Length: +46\r\n\r\n" + ANTAEUS_BODY, 400),
    ("length-and-chunked", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + _LENGTH
     + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("gzip-coding", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("long-request-line", b"POST /api/v1/charges?" + b"a" * 8200 + b" HTTP/1.1\r\n" + _HEAD + b"\r\n", 414),
    ("32770-headers", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD
     + b"".join(b"X-H%d: 1\r\n" % i for i in range(32767)) + _LENGTH + b"\r\n" + ANTAEUS_BODY, 431),
    ("large-header", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"X-Big: " + b"a" * 8190 + b"\r\n\r\n", 431),
    ("expect", b"POST /api/v1/charges HTTP/1.1\r\n" + _HEAD + b"Expect: 200-ok\r\n" + _LENGTH + b"\r\n", 417),
]


@pytest.mark.parametrize("raw, status", [c[1:] for c in GUNICORN_REFUSALS], ids=[c[0] for c in GUNICORN_REFUSALS])
def test_gunicorn_refuses_malformed_http_as_json_as_documented(server, raw, status):
    reply = send_raw(server.port, raw)
    assert reply.status == status
    assert reply.headers["content-type"] == "application/json" and reply.headers["connection"] == "close"
    body = reply.json()
    assert body["result"] is False and body["error"] and body["reason"].startswith("The request is not valid HTTP")
    assert server.charge().status == 201  # the worker still serves


def test_the_documented_gunicorn_limits_are_the_configured_ones():
    import runpy

    config = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    statuses = {status for _, _, status in GUNICORN_REFUSALS}
    for doc in ("README.md", "docs/reliability.md"):
        text = (REPO / doc).read_text()
        section = text[text.index("What gunicorn refuses itself" if doc == "README.md" else "what gunicorn refuses itself"):]
        rows = re.findall(r"^\s*\| (\d{3}) \|", section[: section.index("\n\n", section.index("| status |"))], re.M)
        assert set(map(int, rows)) == statuses, (doc, rows)
        assert f"over {config['limit_request_line']} bytes (`limit_request_line`" in section
        assert f"more than {config['limit_request_fields']} header fields (`limit_request_fields`)" in section
        assert f"one over {config['limit_request_field_size']} bytes (`limit_request_field_size`)" in section


def test_swagger_ui_try_it_out_charges_as_a_person_would(server):
    """Headless Chromium opens /api/docs/, clicks "Try it out" then "Execute" on the charge,
    and reads the answer Swagger UI shows: the prefilled example is a charge the server takes."""
    browser = Browser()
    try:
        browser.open(f"http://localhost:{server.port}/api/docs/")
        browser.wait_for("!!document.querySelector('.opblock-summary')")
        browser.evaluate("document.querySelector('.opblock-summary-control').click()")
        browser.wait_for("!!document.querySelector('.try-out__btn')")
        # The error examples show the server's real bodies, not a schema-made placeholder.
        responses = browser.wait_for("document.querySelector('.responses-wrapper')?.innerText")
        assert "additionalProp1" not in responses and "validation_error" in responses, responses
        browser.evaluate("document.querySelector('.try-out__btn').click()")
        prefilled = browser.wait_for("document.querySelector('textarea.body-param__text')?.value")
        assert json.loads(prefilled) == json.loads(ANTAEUS_BODY)
        browser.evaluate("document.querySelector('.btn.execute').click()")
        status = browser.wait_for("document.querySelector('.live-responses-table tbody .response-col_status')?.innerText")
        shown = browser.evaluate("document.querySelector('.live-responses-table tbody .response-col_description pre')"
                                 "?.innerText")
    finally:
        browser.close()
    assert status.strip() == "201", (status, shown)
    answer = json.loads(shown)
    assert answer["customer_id"] == 1 and answer["value"] == "301.99" and isinstance(answer["result"], bool)


def _access_lines(server: Server) -> list[str]:
    return [r["message"] for r in server.log_records() if r.get("logger") == "gunicorn.access"]


def test_no_access_log_line_by_default(server):
    assert server.charge().status == 201
    time.sleep(0.5)  # a line would follow the answer by far less (the test below waits for one)
    assert _access_lines(server) == []


def test_access_log_line_per_request_when_asked(tmp_path):
    srv = Server(tmp_path, env={"GUNICORN_ACCESS_LOG": "true"}).start()
    try:
        assert srv.charge().status == 201
        # gunicorn logs the request after the answer has gone out: wait for the line.
        deadline = time.monotonic() + 10
        while not (charges := [line for line in _access_lines(srv) if "/api/v1/charges" in line]):
            assert time.monotonic() < deadline, srv.log()[-2000:]
            time.sleep(0.05)
        assert len(charges) == 1 and '"POST /api/v1/charges HTTP/1.1" 201' in charges[0], charges
    finally:
        srv.stop()


def test_gunicorn_builds_no_access_log_line_while_the_access_log_is_off(monkeypatch):
    """The logger_class hook: with the deployed logconfig_dict and no access log, gunicorn's
    access() must not build the line's atoms (the per-request cost the hook removes)."""
    import runpy

    from gunicorn.config import Config

    monkeypatch.delenv("GUNICORN_ACCESS_LOG", raising=False)
    settings = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    cfg = Config()
    for name in ("accesslog", "logconfig_dict", "logger_class"):
        cfg.set(name, settings[name])
    logger = cfg.logger_class(cfg)
    built = []
    monkeypatch.setattr(logger, "atoms", lambda *args: built.append(args) or {})
    logger.access(None, None, {}, 0)
    assert built == []
    # The same call with the access logger at INFO builds the line: the check is not vacuous.
    monkeypatch.setattr(logger.access_log, "info", lambda *args: None)
    level = logger.access_log.level
    logger.access_log.setLevel(logging.INFO)
    try:
        logger.access(None, None, {}, 0)
    finally:
        logger.access_log.setLevel(level)
    assert len(built) == 1
