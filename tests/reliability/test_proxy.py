"""The pod's nginx (base/payment/nginx.conf) in front of the real gunicorn: every answer
on the charge port is the service's JSON shape, the charge port serves only what Antaeus
and the kubelet need, the admin and the API docs are on a loopback listener, and what
Django is told about the request comes from nginx, not the client."""

from __future__ import annotations

import re
import socket

import pytest

from harness.server import NGINX_CONF, Server, antaeus_request, read_reply, send_raw
from tests.reliability.test_hostile_input import PROTOCOL_CASES, assert_json_refusal

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    # Static files collected, as in the image: the admin's stylesheet is served too.
    server = Server(tmp_path_factory.mktemp("proxy"), env={"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "1",
                                                          "COLLECTSTATIC_ON_START": "true"},
                    proxy=True)
    try:
        yield server.start()
    finally:
        server.close()


@pytest.mark.parametrize(("raw", "status", "error"), [c[1:] for c in PROTOCOL_CASES],
                         ids=[c[0] for c in PROTOCOL_CASES])
def test_every_refusal_on_the_charge_port_is_json(proxied, raw, status, error):
    reply = send_raw(proxied.port, raw, timeout=10)
    assert_json_refusal(reply, status, error)
    assert proxied.charge().status == 201  # and the next charge is served


def test_the_charge_port_serves_charges_and_health(proxied):
    assert proxied.charge().status == 201
    assert proxied.charge(path="/api/v1/charges/").status == 201
    assert proxied.get("/healthz").status == 200
    assert proxied.get("/readyz").status == 200


def get(port: int, path: str) -> tuple[int, str, bytes]:
    raw = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    reply = send_raw(port, raw, timeout=10, method="GET")
    return reply.status, reply.headers.get("content-type", ""), reply.body


def test_the_admin_and_the_api_docs_are_served_on_the_loopback_listener(proxied):
    """What the charge port refuses (PROTOCOL_CASES), an operator's port-forward reaches."""
    status, content_type, body = get(proxied.admin_port, "/admin/login/")
    assert status == 200 and content_type.startswith("text/html") and b"csrfmiddlewaretoken" in body
    assert get(proxied.admin_port, "/static/admin/css/base.css")[0] == 200
    assert get(proxied.admin_port, "/api/docs/")[0] == 200
    assert get(proxied.admin_port, "/api/schema/")[0] == 200
    for path in ("/admin/login/", "/api/docs/", "/api/schema/", "/static/admin/css/base.css"):
        assert get(proxied.port, path)[0] == 404, path


def test_every_listener_but_the_charge_port_is_on_loopback():
    """Only port 8000 (the Service's, the NetworkPolicy's) listens on the pod's address;
    the admin listener is reachable through the pod's loopback only (kubectl port-forward
    connects there), whatever any NetworkPolicy allows."""
    listens = re.findall(r"^\s*listen (\S+);", NGINX_CONF.read_text(), re.M)
    assert listens[0] == "8000"
    assert listens[1:] and all(address.startswith("127.0.0.1:") for address in listens[1:]), listens


def test_a_clients_forwarding_headers_do_not_change_what_django_sees(tmp_path):
    """nginx sets X-Forwarded-* from what it knows and drops the client's copies; gunicorn
    trusts them from nginx only. Django (the service's settings) sees plain http."""
    server = Server(tmp_path, proxy=True, command=(
        "gunicorn", "--config", "gunicorn.conf.py", "tests.reliability.echo_app:application"))
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl",
              "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "attacker.example",
              "Forwarded": "for=203.0.113.9;proto=https"}
    try:
        server.start()
        plain = send_raw(server.port, antaeus_request()).json()
        forging = send_raw(server.port, antaeus_request(extra_headers=forged)).json()
    finally:
        server.close()
    assert plain["scheme"] == "http" and plain["is_secure"] is False
    assert forging == plain, forging
    assert forging["forwarding"] == {
        "HTTP_X_FORWARDED_FOR": "127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "http",
        "HTTP_X_FORWARDED_HOST": "payment.payment.svc.cluster.local",
    }


def test_a_draining_proxy_closes_each_connection_after_its_answer(tmp_path):
    """The proxy's preStop hook creates /tmp/draining (components/postgres): every answer
    then says `Connection: close`, and the next request finds the connection closed."""
    server = Server(tmp_path, proxy=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(antaeus_request())
            assert read_reply(sock).headers["connection"] == "keep-alive"
            (tmp_path / "draining").touch()
            sock.sendall(antaeus_request())
            reply = read_reply(sock)
            assert reply.status == 201 and reply.headers["connection"] == "close"
            assert sock.recv(1) == b""
        assert get(server.port, "/healthz")[0] == 200  # still answering new connections meanwhile
    finally:
        server.close()
