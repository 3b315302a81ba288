"""A real Prometheus (Debian's package) scrapes the real service on loopback, with the
alert rules loaded: every series the alerts select and every dashboard query returns
data, and every rule evaluates without error."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.monitoring.conftest import alert_rules, dashboard_queries, rule_groups_file, runnable, selectors, tool
from tests.reliability.harness import DatabaseLock
from harness.server import Server, antaeus_request, free_port, send_raw

pytestmark = pytest.mark.server

SCRAPE_INTERVAL = "1s"


class Prometheus:
    def __init__(self, directory, target_port: int):
        self.port = free_port()
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [rule_groups_file(directory)],
            "scrape_configs": [
                {"job_name": "payment", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                tool("prometheus", "prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = directory / "prometheus.log"

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def wait(self, what, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                if result := what():
                    return result
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus: condition not met in {timeout}s:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """The service, some traffic of every kind, and a Prometheus that has scraped it."""
    directory = tmp_path_factory.mktemp("prometheus")
    server = Server(directory / "server", env={"SQLITE_BUSY_TIMEOUT_SECONDS": "0.3"}).start()
    prometheus = Prometheus(directory, server.metrics_port)
    try:
        prometheus.wait(lambda: prometheus.query('up{job="payment"} == 1'))
        for _ in range(20):
            send_raw(server.port, antaeus_request())
        send_raw(server.port, antaeus_request(b'{"customer_id":"1","value":1}'))
        send_raw(server.port, antaeus_request(b'{"customer_id":1,"value":1}', extra_headers={"Idempotency-Key": "p1"}))
        send_raw(server.port, antaeus_request(b'{"customer_id":1,"value":1}', extra_headers={"Idempotency-Key": "p1"}))
        with DatabaseLock(server.database, sys.executable):
            send_raw(server.port, antaeus_request())
        server.get("/readyz")
        # 20 + 1 rejected + 1 keyed (its repeat is a replay) + 1 refused with 503.
        # Rates need two samples after the traffic: wait until one covers it all.
        prometheus.wait(lambda: prometheus.query('sum(payment_charges_total{job="payment"}) >= 23'))
        time.sleep(3)
        for _ in range(10):  # and traffic in the latest samples too
            send_raw(server.port, antaeus_request())
        server.get("/readyz")
        prometheus.wait(lambda: prometheus.query('sum(payment_charges_total{job="payment"}) >= 33'))
        time.sleep(2)
        yield server, prometheus
    finally:
        prometheus.stop()
        server.stop()


def test_prometheus_counts_what_the_service_answered(scraped):
    server, prometheus = scraped
    by_outcome = {
        r["metric"]["outcome"]: float(r["value"][1])
        for r in prometheus.query('sum by (outcome) (payment_charges_total{job="payment"})')
    }
    with server.db() as db:
        recorded = dict(db.execute("SELECT succeeded, COUNT(*) FROM payment_app_chargeattempt GROUP BY succeeded"))
    assert by_outcome["succeeded"] == recorded.get(1, 0)
    assert by_outcome["declined"] == recorded.get(0, 0)
    assert by_outcome["rejected"] == 1 and by_outcome["storage_unavailable"] == 1
    assert float(prometheus.query('sum(payment_charge_replays_total{job="payment"})')[0]["value"][1]) == 1


def test_every_series_an_alert_selects_has_data(scraped):
    _, prometheus = scraped
    for rule in alert_rules():
        found = selectors(rule["expr"])
        assert found, rule["alert"]
        for selector in found:
            assert prometheus.query(f"count({selector})"), f"{rule['alert']}: {selector} has no data"


def test_every_rule_evaluates_without_error_and_none_fires(scraped):
    _, prometheus = scraped

    def evaluated():
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = prometheus.wait(evaluated)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", rule
    # A healthy service with a little traffic: nothing is even pending, except the
    # refusal alerts this test's own refused charges may trip (they need minutes to fire).
    deliberate = {"PaymentDatabaseUnavailable", "PaymentChargesRejected"}
    assert {r["name"] for r in rules if r["state"] != "inactive"} <= deliberate


def test_every_dashboard_query_returns_data(scraped):
    _, prometheus = scraped
    for title, expr in dashboard_queries():
        result = prometheus.query(runnable(expr))
        assert result, f"{title}: no data for {runnable(expr)}"
        assert all(r["value"][1] not in ("NaN",) for r in result), f"{title}: {result}"
