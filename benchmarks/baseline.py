"""The bare baseline: the charge path as a plain WSGI application, no framework.

It does the work the payment service must do for a charge, and nothing else, so its
throughput under the same gunicorn settings is the ceiling a Python server reaches for
this work on this machine:

- parse the JSON body with amounts as Decimal, and check the three fields' types;
- draw the outcome from a locked `random.Random` at PAYMENT_SUCCESS_RATE;
- wait for the other writers in the same flock() queue on `<database>.writer-lock`
  (the service's SQLite write queue), then INSERT the same row (with its SHA-256 request
  fingerprint) into the table the service's own migration creates, as one statement in
  autocommit mode as the service commits an unkeyed charge, on a per-thread connection
  kept open, with the service's PRAGMAs (journal_mode=WAL, synchronous=FULL, busy timeout);
- answer the same JSON object (id, created_at, customer_id, value, currency, result).

It is started through the container's entrypoint (so `manage.py migrate` creates the
table) with the repo's gunicorn.conf.py:

    scripts/entrypoint gunicorn --config gunicorn.conf.py benchmarks.baseline:application

Not part of the service: nothing imports it outside the benchmark.
"""

import fcntl
import hashlib
import json
import os
import random
import sqlite3
import threading
from datetime import datetime, timezone
from decimal import Decimal

DATABASE_PATH = os.environ["DATABASE_PATH"]
SUCCESS_RATE = float(os.environ.get("PAYMENT_SUCCESS_RATE", "0.5"))
BUSY_TIMEOUT = float(os.environ.get("SQLITE_BUSY_TIMEOUT_SECONDS", "10"))
# The service's PRAGMAs (payment_project/settings.py). BENCH_SQLITE_SYNCHRONOUS exists only
# so the benchmark can show what the fsync at every commit costs; the ratio uses FULL.
SYNCHRONOUS = os.environ.get("BENCH_SQLITE_SYNCHRONOUS", "FULL")
MAX_BODY = 4096
CENT = Decimal("0.01")

INSERT = (
    "INSERT INTO payment_app_chargeattempt"
    " (created_at, customer_id, amount, currency, succeeded, idempotency_key, request_fingerprint)"
    " VALUES (?, ?, ?, ?, ?, NULL, ?)"
)

_local = threading.local()
_rng = random.Random()
_rng_lock = threading.Lock()


def _connection() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DATABASE_PATH, timeout=BUSY_TIMEOUT, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        _local.conn = conn
        _local.queue = os.open(f"{DATABASE_PATH}.writer-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return conn


def _answer(start_response, status: str, body: dict):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _refuse(start_response, status: str, code: str):
    return _answer(start_response, status, {"result": False, "error": code})


def _valid(data) -> tuple[int, Decimal, str] | None:
    if not isinstance(data, dict):
        return None
    customer_id, value, currency = data.get("customer_id"), data.get("value"), data.get("currency")
    if isinstance(customer_id, bool) or not isinstance(customer_id, int) or customer_id < 1:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        return None
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(CENT):
        return None
    if currency is None or currency == {}:
        currency = ""
    elif not isinstance(currency, str) or len(currency) != 3:
        return None
    return customer_id, amount.quantize(CENT), currency


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/readyz":
        _connection().execute("SELECT 1 FROM payment_app_chargeattempt LIMIT 1").fetchall()
        return _answer(start_response, "200 OK", {"status": "ok"})
    if path not in ("/api/v1/charges", "/api/v1/charges/"):
        return _refuse(start_response, "404 Not Found", "not_found")
    if environ["REQUEST_METHOD"] != "POST":
        return _refuse(start_response, "405 Method Not Allowed", "method_not_allowed")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > MAX_BODY:
        return _refuse(start_response, "413 Request Entity Too Large", "payload_too_large")
    try:
        parsed = _valid(json.loads(environ["wsgi.input"].read(length), parse_float=Decimal))
    except ValueError:
        parsed = None
    if parsed is None:
        return _refuse(start_response, "400 Bad Request", "validation_error")
    customer_id, amount, currency = parsed

    fingerprint = hashlib.sha256(f"{customer_id}|{amount:f}|{currency}".encode()).hexdigest()
    with _rng_lock:
        succeeded = _rng.random() < SUCCESS_RATE
    created_at = datetime.now(timezone.utc)
    conn = _connection()
    fcntl.flock(_local.queue, fcntl.LOCK_EX)
    try:
        # Autocommit (isolation_level=None): SQLite commits the INSERT on its own.
        row_id = conn.execute(
            INSERT,
            (created_at.replace(tzinfo=None).isoformat(" "), customer_id, f"{amount:f}",
             currency, succeeded, fingerprint),
        ).lastrowid
    except sqlite3.Error:
        return _refuse(start_response, "503 Service Unavailable", "storage_unavailable")
    finally:
        fcntl.flock(_local.queue, fcntl.LOCK_UN)
    return _answer(start_response, "201 Created", {
        "id": row_id,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
        "customer_id": customer_id,
        "value": f"{amount:f}",
        "currency": currency or None,
        "result": succeeded,
    })
