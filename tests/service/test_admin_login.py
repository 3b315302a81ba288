"""The admin's login under django-axes: failures recorded and logged, then a lockout that
refuses every attempt without checking a password (the CPU a charge would wait for), as
JSON, until the cool-off passes."""

from __future__ import annotations

import datetime
import http.cookiejar
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from harness.server import Server

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
USER, PASSWORD = "ops", "the-right-password-4k9w"
WRONG = "a-wrong-password-q2x7"


@pytest.fixture
def operator(settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    return get_user_model().objects.create_user(username=USER, password=PASSWORD, is_staff=True)


@pytest.fixture
def password_checks(monkeypatch):
    """How many times a password is hashed (each costs a worker ~0.3 s of CPU)."""
    calls = []
    real = PBKDF2PasswordHasher.encode

    def encode(self, password, salt, iterations=None):
        calls.append(1)
        return real(self, password, salt, iterations)

    monkeypatch.setattr(PBKDF2PasswordHasher, "encode", encode)
    return calls


def login(client, password: str, username: str = USER):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def test_failures_are_logged_then_the_login_locks_without_checking_passwords(
        client, operator, settings, caplog, password_checks):
    caplog.set_level(logging.INFO)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, WRONG).status_code == 200  # the form again: "enter a correct username and password"
    assert len(password_checks) == settings.AXES_FAILURE_LIMIT - 1
    locked = login(client, WRONG)  # the limit-th failure locks
    assert locked.status_code == 429
    checks_at_lock = len(password_checks)

    # Locked: even the right password is refused, and no password is checked at all.
    for password in (WRONG, PASSWORD, WRONG):
        refused = login(client, password)
        assert refused.status_code == 429 and refused["Content-Type"] == "application/json"
        body = json.loads(refused.content)
        assert body["result"] is False and body["error"] == "login_locked_out" and body["reason"]
        assert int(refused["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())
    assert len(password_checks) == checks_at_lock
    assert not client.session.get("_auth_user_id")

    # Each counted failure is in the database (all pods share it) and in the log, with the
    # user name and never a password.
    assert sum(a.failures_since_start for a in AccessAttempt.objects.all()) == settings.AXES_FAILURE_LIMIT
    failures = [r.getMessage() for r in caplog.records if r.name.startswith("axes") and r.levelno == logging.WARNING]
    counted = [m for m in failures if "login failure by" in m]
    assert len(counted) == settings.AXES_FAILURE_LIMIT and all(f'username: "{USER}"' in m for m in counted), failures
    assert len([m for m in failures if m.startswith("AXES: Locking out")]) == 1, failures
    assert not [r for r in caplog.records if PASSWORD in r.getMessage() or WRONG in r.getMessage()]


def test_a_flood_over_many_user_names_is_stopped_too(client, operator, settings, password_checks):
    for n in range(settings.AXES_FAILURE_LIMIT):
        login(client, WRONG, username=f"guess-{n}")
    assert login(client, PASSWORD).status_code == 429
    assert len(password_checks) == settings.AXES_FAILURE_LIMIT


def test_the_lockout_ends_after_the_cool_off(client, operator, settings):
    settings.AXES_COOLOFF_TIME = datetime.timedelta(seconds=1)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, WRONG)
    assert login(client, PASSWORD).status_code == 429
    time.sleep(1.2)
    assert login(client, PASSWORD).status_code == 302  # signed in
    # A success clears the count: a typo later does not start close to the limit.
    assert not AccessAttempt.objects.exists()


@pytest.mark.server
def test_the_real_server_locks_the_admin_login(tmp_path):
    srv = Server(tmp_path, env={"DJANGO_SUPERUSER_USERNAME": USER, "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
                                "ADMIN_LOGIN_FAILURE_LIMIT": "3"})
    srv.start()
    try:
        base = f"http://localhost:{srv.port}"
        jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(secure_protocols=("https", "wss", "http")))
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def attempt(password: str) -> tuple[int, bytes]:
            opener.open(f"{base}{LOGIN}", timeout=10).read()
            csrf = next(c.value for c in jar if c.name == "csrftoken")
            form = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf, "username": USER, "password": password,
                                           "next": "/admin/"}).encode()
            request = urllib.request.Request(f"{base}{LOGIN}", data=form, headers={"Referer": f"{base}{LOGIN}"})
            try:
                with opener.open(request, timeout=10) as reply:
                    return reply.status, reply.read()
            except urllib.error.HTTPError as refused:
                return refused.code, refused.read()

        assert [attempt(WRONG)[0] for _ in range(2)] == [200, 200]
        assert attempt(WRONG)[0] == 429
        status, body = attempt(PASSWORD)
        assert status == 429 and json.loads(body)["error"] == "login_locked_out"
        assert srv.charge().status == 201  # charges are not affected
        log = srv.log()
        assert log.count("login failure by") == 3, log
        assert PASSWORD not in log and WRONG not in log
    finally:
        srv.stop()
