"""scripts/verify-deployment against a local stand-in for Antaeus's REST API."""

from __future__ import annotations

import ast
import http.server
import importlib.machinery
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.kube import REPO, render, render_text

pytestmark = pytest.mark.manifests

SCRIPT = REPO / "scripts" / "verify-deployment"


def load_script():
    loader = importlib.machinery.SourceFileLoader("verify_deployment", str(SCRIPT))
    spec = importlib.util.spec_from_loader("verify_deployment", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    loader.exec_module(module)
    return module


class FakeAntaeus(http.server.ThreadingHTTPServer):
    """Antaeus's routes as the contract describes them: the stock seed data (10 invoices,
    ids 1 and 6 PAID), and a pay run that charges PENDING invoices in id order and stops at
    the first declined charge. Charge outcomes come from a fixed script, not chance."""

    def __init__(self, outcomes: list[bool]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.outcomes = list(outcomes)
        self.invoices = [
            {"id": i, "customerId": 1 + (i > 5), "amount": {"value": 100 + i, "currency": "USD"},
             "status": "PAID" if i in (1, 6) else "PENDING"}
            for i in range(1, 11)
        ]
        self.calls: list[str] = []
        self.health_status = 200
        self.fail_pay_call: int | None = None  # the n-th pay answers an HTML 500 page
        self.pay_body: bytes | None = None  # a malformed pay answer
        self.token: str | None = None  # like production's edge: 401 without this bearer token
        self.authorizations: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def pay(self) -> bool:
        for invoice in self.invoices:
            if invoice["status"] == "PENDING":
                if not self.outcomes.pop(0):
                    return False
                invoice["status"] = "PAID"
        return True


class Handler(http.server.BaseHTTPRequestHandler):
    server: FakeAntaeus

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def answer(self, status: int, body: bytes, content_type="application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def refused(self) -> bool:
        self.server.authorizations.append(self.headers.get("Authorization"))
        if self.server.token is not None and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self.answer(401, b"<html><body>401 Authorization Required</body></html>", "text/html")
            return True
        return False

    def do_GET(self) -> None:
        if self.refused():
            return
        self.server.calls.append(f"GET {self.path}")
        if self.path == "/rest/health":
            self.answer(self.server.health_status, b'"ok"')
        elif self.path == "/rest/v1/invoices":
            self.answer(200, json.dumps(self.server.invoices).encode())
        else:
            self.answer(404, b"Not found", "text/plain")

    def do_POST(self) -> None:
        if self.refused():
            return
        self.server.calls.append(f"POST {self.path}")
        if self.path != "/rest/v1/invoices/pay":
            self.answer(404, b"Not found", "text/plain")
            return
        pays = self.server.calls.count("POST /rest/v1/invoices/pay")
        if pays == self.server.fail_pay_call:
            self.answer(500, b"<html><body>Server Error</body></html>", "text/html")
        elif self.server.pay_body is not None:
            self.answer(200, self.server.pay_body)
        else:
            self.answer(200, json.dumps(self.server.pay()).encode())


@pytest.fixture
def antaeus():
    servers = []

    def start(outcomes=(True,) * 8) -> FakeAntaeus:
        server = FakeAntaeus(list(outcomes))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
        check=False, env={**os.environ, "ANTAEUS_TOKEN": "", **(env or {})},
    )


def test_a_bearer_token_from_the_environment_passes_an_authenticating_edge(antaeus):
    fake = antaeus()
    fake.token = "idp-issued-token-5Qx"
    refused = run(fake.url, "--quiet")
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    assert fake.calls == [], "nothing reached Antaeus without the token"
    passed = run(fake.url, "--quiet", env={"ANTAEUS_TOKEN": fake.token})
    assert passed.returncode == 0, passed.stderr
    assert "POST /rest/v1/invoices/pay" in fake.calls
    assert set(fake.authorizations[1:]) == {f"Bearer {fake.token}"}
    assert fake.token not in passed.stdout + passed.stderr + refused.stdout + refused.stderr


def test_pays_lists_and_compares_with_the_expected_share(antaeus):
    # Run 1: invoices 2, 3 paid, 4 declined; run 2: 4 paid, 5 declined; run 3: 5 declined.
    server = antaeus([True, True, False, True, False, False])
    result = run(server.url + "/", "--pay-calls", "3", "--success-rate", "0.5")
    assert result.returncode == 0, result.stderr
    assert server.calls == [
        "GET /rest/health", "GET /rest/v1/invoices",
        *["POST /rest/v1/invoices/pay"] * 3, "GET /rest/v1/invoices",
    ]
    assert "invoices:      10 (5 PAID, 5 PENDING)" in result.stdout
    assert "PAID share:    50% (before: 20%)" in result.stdout
    assert "expected:      49% on average at success rate 0.5 after 3 pay call(s)" in result.stdout
    assert "pay answers:   false, false, false" in result.stdout
    # Progress goes to stderr, one line per step and the pay bar.
    assert "==> health: GET" in result.stderr and "3/3" in result.stderr


def test_default_is_one_pay_call_and_thirty_percent_expected(antaeus):
    server = antaeus()
    result = run(server.url)
    assert result.returncode == 0, result.stderr
    assert "PAID share:    100%" in result.stdout
    assert "expected:      30% on average at success rate 0.5 after 1 pay call(s)" in result.stdout
    assert server.calls.count("POST /rest/v1/invoices/pay") == 1


def test_a_failed_pay_call_fails_the_run(antaeus):
    server = antaeus()
    server.fail_pay_call = 2
    result = run(server.url, "-n", "3", "--quiet")
    assert result.returncode == 1
    assert "FAILED: POST" in result.stderr and "HTTP 500" in result.stderr
    assert server.calls.count("POST /rest/v1/invoices/pay") == 2, "stops at the failure"
    assert result.stdout == ""


def test_a_pay_answer_that_is_not_a_boolean_fails_the_run(antaeus):
    server = antaeus()
    server.pay_body = b'{"result": true}'
    result = run(server.url)
    assert result.returncode == 1
    assert "expected true or false" in result.stderr


def test_unhealthy_antaeus_is_never_paid(antaeus):
    server = antaeus()
    server.health_status = 503
    result = run(server.url)
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr
    assert server.calls == ["GET /rest/health"]


def test_unreachable_antaeus_fails_clearly():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the script connects
    result = run(f"http://127.0.0.1:{port}", "--timeout", "5")
    assert result.returncode == 1
    assert "FAILED: GET" in result.stderr and "/rest/health failed" in result.stderr


@pytest.mark.parametrize("args", [["--success-rate", "1.5", "http://x"], ["ftp://x"], []])
def test_bad_arguments_exit_2(args):
    assert run(*args).returncode == 2


def test_expected_share_matches_the_contract():
    share = load_script().expected_paid_share
    # (2 + p + p^2 + ... + p^8) / 10 for one pay call.
    assert share(paid=2, pending=8, success_rate=0.5, pay_calls=1) == pytest.approx(0.2996, abs=1e-4)
    assert share(paid=2, pending=8, success_rate=0.5, pay_calls=3) == pytest.approx(0.49, abs=0.01)
    assert share(paid=2, pending=8, success_rate=0.77, pay_calls=1) == pytest.approx(0.49, abs=0.01)
    assert share(paid=2, pending=8, success_rate=1.0, pay_calls=1) == 1.0
    assert share(paid=2, pending=8, success_rate=0.0, pay_calls=5) == 0.2
    assert share(paid=10, pending=0, success_rate=0.5, pay_calls=2) == 1.0


def test_script_is_an_executable_stdlib_only_tool():
    assert os.access(SCRIPT, os.X_OK)
    source = SCRIPT.read_text()
    assert source.startswith("#!/usr/bin/env python3\n")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= sys.stdlib_module_names | {"__future__"}, imported - sys.stdlib_module_names
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--pay-calls" in result.stdout


# --- The success rate per environment, and the share a user should expect ---------------------

SEED_PAID, SEED_PENDING = 2, 8  # stock Antaeus's seed data: ids 1 and 6 of 10 are PAID


def readme_formula(p: float) -> float:
    """The README's formula for one pay call: (2 + p + p^2 + ... + p^8) / 10."""
    return (2 + sum(p**k for k in range(1, 9))) / 10


def configured_rate(overlay: str) -> float:
    config = next(o for o in render(overlay) if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("payment-config"))
    return float(config["data"]["PAYMENT_SUCCESS_RATE"])


def test_staging_gives_about_half_paid_after_one_pay_call():
    """Pleo's acceptance check calls pay once and expects roughly half PAID: staging, the
    environment deployed to be checked, is set so that this holds on average."""
    rate = configured_rate("overlays/staging/payment")
    share = load_script().expected_paid_share(paid=SEED_PAID, pending=SEED_PENDING, success_rate=rate, pay_calls=1)
    assert share == pytest.approx(readme_formula(rate))
    assert share == pytest.approx(0.5, abs=0.005), (rate, share)


def test_service_default_and_production_stay_at_one_half():
    from django.conf import settings

    assert configured_rate("overlays/production/payment") == 0.5
    assert configured_rate("base/payment") == 0.5
    # The setting's own default (the test environment does not set the variable).
    assert "PAYMENT_SUCCESS_RATE" not in os.environ
    assert settings.PAYMENT_SUCCESS_RATE == 0.5


def test_reads_the_rate_from_the_overlay_and_prints_the_spread(antaeus):
    server = antaeus([True, True, True, False])
    result = run(server.url, "--overlay", str(REPO / "overlays/staging"))
    assert result.returncode == 0, result.stderr
    assert "expected:      50% on average at success rate 0.775 after 1 pay call(s)" in result.stdout
    assert "success rate:  0.775 (PAYMENT_SUCCESS_RATE in " in result.stdout
    # One call at 0.775: 22.5% of runs stop at the first invoice (20% PAID), 13% pay all 8.
    assert "spread:        with 8 pending invoices one run is coarse: standard deviation 27 points; " \
        "8 runs in 10 end between 20% and 100% PAID" in result.stdout


def test_reads_the_rate_from_rendered_manifests_on_stdin(antaeus):
    server = antaeus([False])
    result = subprocess.run(
        [sys.executable, str(SCRIPT), server.url, "--manifests", "-"],
        input=render_text("overlays/production"), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "expected:      30% on average at success rate 0.5 after 1 pay call(s)" in result.stdout
    assert "success rate:  0.5 (PAYMENT_SUCCESS_RATE in standard input)" in result.stdout
    assert "standard deviation 14 points; 8 runs in 10 end between 20% and 50% PAID" in result.stdout


def test_rate_in_a_container_env_is_read_and_conflicts_are_refused(tmp_path):
    script = load_script()
    env_form = "env:\n  - name: PAYMENT_SUCCESS_RATE\n    value: \"0.6\"\n"
    assert script.success_rate_from_manifests(env_form, "x") == 0.6
    both = env_form + "data:\n  PAYMENT_SUCCESS_RATE: \"0.7\"\n"
    with pytest.raises(ValueError, match="different values: 0.6, 0.7"):
        script.success_rate_from_manifests(both, "x")
    (tmp_path / "none.yaml").write_text("kind: ConfigMap\n")
    result = run("http://127.0.0.1:9", "--manifests", str(tmp_path / "none.yaml"))
    assert result.returncode == 2 and "sets no PAYMENT_SUCCESS_RATE" in result.stderr


def test_spread_matches_a_simulation_of_the_pay_run():
    """The spread the script prints, against Antaeus's pay loop played 20,000 times."""
    import random

    script = load_script()
    rng = random.Random(14)
    shares = []
    for _ in range(20_000):
        paid = SEED_PAID
        for _invoice in range(SEED_PENDING):
            if rng.random() >= 0.775:
                break
            paid += 1
        shares.append(paid / 10)
    mean = sum(shares) / len(shares)
    deviation = (sum((s - mean) ** 2 for s in shares) / len(shares)) ** 0.5
    spread = script.paid_share_spread(paid=SEED_PAID, pending=SEED_PENDING, success_rate=0.775, pay_calls=1)
    assert mean == pytest.approx(0.5, abs=0.01)
    assert spread.deviation == pytest.approx(deviation, abs=0.01)
