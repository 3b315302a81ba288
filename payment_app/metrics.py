"""Prometheus metrics: the metric objects and the helpers that update them.

Under gunicorn every worker is its own process, so the client library runs in its
multiprocess mode: PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py before anything
imports prometheus_client) holds one memory-mapped file per worker and metric type,
and the gunicorn master sums them when it is scraped on METRICS_PORT. A worker's files
stay after it dies, so a respawn never makes a counter go down. Outside gunicorn (the
Django test client, manage.py) the same objects count in the process's own registry.

Names follow Prometheus' conventions (`_total` counters, base units); every label value
comes from a short fixed list, never from the request.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

# Charge attempts by what the answer said. `error` is the machine-readable code of a
# refused charge (validation_error, parse_error, ...), empty when an attempt was recorded.
#   succeeded / declined       an attempt was recorded; result true / false
#   rejected                   refused before an attempt was recorded (4xx)
#   storage_unavailable        the database could not record it (503); nothing was charged
#   error                      a bug (500)
CHARGES = Counter(
    "payment_charges",
    "Charge requests by outcome (replays of an Idempotency-Key are counted apart).",
    ["outcome", "error"],
)
REPLAYS = Counter(
    "payment_charge_replays",
    "Charges answered by replaying the attempt recorded for their Idempotency-Key.",
)
# From a few ms (one SQLite commit) to the 10 s busy timeout and beyond.
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CHARGE_DURATION = Histogram(
    "payment_charge_duration_seconds",
    "Time to answer a charge request, from the view's start to its response, any outcome.",
    buckets=LATENCY_BUCKETS,
)
# The most recent readiness answer of any live worker (the kubelet probes one at a time).
READY = Gauge(
    "payment_ready",
    "1 when the last /readyz answer was ready (database writable, schema current), else 0.",
    multiprocess_mode="livemostrecent",
)
SUCCESS_RATE = Gauge(
    "payment_success_rate_configured",
    "PAYMENT_SUCCESS_RATE: the share of charges meant to succeed.",
    multiprocess_mode="livemax",
)
HTTP_REQUESTS = Counter(
    "payment_http_requests",
    "HTTP requests answered by the application, by route and status code.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "payment_http_request_duration_seconds",
    "Time the application took to answer an HTTP request, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)

# Label values for routes: the URL pattern's name, never the raw path (unbounded).
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# Label children by their values: labels() validates and builds its key on every call, a
# few microseconds each, so each child is looked up once (docs/performance.md).
_charge_children: dict[tuple[str, str], object] = {}
_http_children: dict[tuple[str, str, int], tuple[object, object]] = {}


def _charges(outcome: str, error: str):
    child = _charge_children.get((outcome, error))
    if child is None:
        child = _charge_children[(outcome, error)] = CHARGES.labels(outcome, error)
    return child


def charge_recorded(*, succeeded: bool, created: bool) -> None:
    """A charge answered with an attempt: a new one, or the replay of an earlier one."""
    if not created:
        REPLAYS.inc()
    else:
        _charges("succeeded" if succeeded else "declined", "").inc()


def charge_refused(*, status: int, error: str) -> None:
    """A charge answered with an error body (the one error shape of payment_app.errors)."""
    if status == 503:
        outcome = "storage_unavailable"
    elif status >= 500:
        outcome = "error"
    else:
        outcome = "rejected"
    _charges(outcome, error).inc()


def charge_timed(started: float) -> None:
    CHARGE_DURATION.observe(time.perf_counter() - started)


def readiness(ready: bool) -> None:
    READY.set(1 if ready else 0)


def worker_started(*, success_rate: float) -> None:
    """Called in each gunicorn worker once it runs: the values a worker holds from its start.

    Every outcome is created at zero too (a refusal with its most common code), so a rate
    over it is 0, not "no data", until the first charge of that kind.
    """
    SUCCESS_RATE.set(success_rate)
    for outcome, error in (
        ("succeeded", ""),
        ("declined", ""),
        ("rejected", "validation_error"),
        ("storage_unavailable", "storage_unavailable"),
        ("error", "error"),
    ):
        _charges(outcome, error)


def http_request(*, route: str, method: str, status: int, seconds: float) -> None:
    key = (route, method, status)
    children = _http_children.get(key)
    if children is None:
        label = method if method in _KNOWN_METHODS else "other"
        children = _http_children[key] = (
            HTTP_REQUESTS.labels(route, label, str(status)),
            HTTP_DURATION.labels(route),
        )
    requests, duration = children
    requests.inc()
    duration.observe(seconds)


class WorkerProcessCollector:
    """The gunicorn workers' process metrics (CPU, memory, file descriptors), for the
    master's /metrics: the client library's own ProcessCollector, read for each live
    worker and labelled with its pid. (In multiprocess mode the workers export none
    themselves.) A worker's series end with it; its successor starts new ones."""

    PREFIX = "payment_worker_"

    def __init__(self, worker_pids):
        self._worker_pids = worker_pids  # () -> iterable of pids

    def collect(self):
        from prometheus_client import ProcessCollector
        from prometheus_client.metrics_core import Metric

        families: dict[str, Metric] = {}
        for pid in sorted(self._worker_pids()):
            collector = ProcessCollector(namespace="", pid=lambda pid=pid: pid, registry=None)
            for family in collector.collect():
                name = self.PREFIX + family.name.removeprefix("process_")
                merged = families.get(name)
                if merged is None:
                    merged = families[name] = Metric(name, f"Each worker's {family.documentation[0].lower()}"
                                                     f"{family.documentation[1:]}", family.type)
                for sample in family.samples:
                    merged.add_sample(
                        self.PREFIX + sample.name.removeprefix("process_"), {**sample.labels, "pid": str(pid)}, sample.value
                    )
        yield from families.values()
