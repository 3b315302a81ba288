"""Load, fault and bookkeeping helpers for the reliability tests (real gunicorn server).

All traffic goes to 127.0.0.1. Every loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import http.client
import itertools
import json
import pathlib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from harness import postgres
from harness.server import Server, antaeus_request, read_reply

CHARGES = "payment_app_chargeattempt"


@dataclass
class FaultServer(Server):
    """The real server with its database in a directory of its own (db/), so a test can
    take the directory away or make it unwritable without touching the log or the key."""

    @property
    def database(self) -> pathlib.Path:
        return self.data_dir / "db" / "payment.sqlite3"

    def rows(self) -> dict[int, tuple[int, bool]]:
        """{attempt id: (customer_id, succeeded)} as stored."""
        with self.db() as db:
            return {i: (c, bool(s)) for i, c, s in db.execute(f"SELECT id, customer_id, succeeded FROM {CHARGES}")}

    def count(self) -> int:
        with self.db() as db:
            return db.execute(f"SELECT COUNT(*) FROM {CHARGES}").fetchone()[0]

    def integrity(self) -> str:
        """SQLite's integrity_check, or PostgreSQL's amcheck over the table's indexes."""
        with self.db() as db:
            if not self.database_url:
                return "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))
        return postgres.amcheck(self.database_url, CHARGES)

    def log_count(self, text: str) -> int:
        return self.log().count(text)


def charge_body(customer_id: int, value: str = "10.5") -> bytes:
    return b'{"currency":{},"customer_id":%d,"value":%s}' % (customer_id, value.encode())


# --- Load -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    customer_id: int
    port: int = 0  # where its connection went
    status: int | None = None  # None: no HTTP response at all
    body: dict | None = None
    error: str | None = None  # "no_response" (connection refused/reset before any byte) or "partial: ..."
    sent_at: float = 0.0
    done_at: float = 0.0


@dataclass
class Load:
    """Charges from `connections` keep-alive connections, each request with a unique customer_id
    (base + n) so every answer can be matched to its stored row."""

    port: int
    total: int
    connections: int = 64
    base: int = 1_000_000
    timeout: float = 30.0
    stop_on_refused: bool = False
    # Where each new connection goes (a Service's choice among its endpoints); `port` if None.
    route: Callable[[], int] | None = None
    # Seconds each client waits between its charges: a steady stream rather than a flood.
    pause: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self._numbers = iter(range(self.total))
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.connections)]

    def start(self) -> "Load":
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 300.0) -> "Load":
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load clients did not finish in time"
        self.seconds = time.monotonic() - self._started
        return self

    def run(self, timeout: float = 300.0) -> "Load":
        return self.start().join(timeout)

    def answered(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def _next(self) -> int | None:
        if self._stop.is_set():
            return None
        with self._lock:
            return next(self._numbers, None)

    def _client(self) -> None:
        sock = None
        refused = 0
        try:
            while (n := self._next()) is not None:
                outcome = Outcome(customer_id=self.base + n)
                outcome.sent_at = time.monotonic()
                try:
                    if sock is None:
                        port = self.route() if self.route else self.port
                        sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
                    outcome.port = sock.getpeername()[1]
                    sock.sendall(antaeus_request(charge_body(outcome.customer_id)))
                    reply = read_reply(sock)
                    outcome.status, outcome.body = reply.status, json.loads(reply.body)
                    if reply.headers.get("connection", "").lower() == "close":
                        sock.close()
                        sock = None
                except (http.client.RemoteDisconnected, ConnectionError) as exc:
                    outcome.error = f"no_response: {type(exc).__name__}"
                    refused += isinstance(exc, ConnectionRefusedError)
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    outcome.error = f"partial: {type(exc).__name__}: {exc}"
                if outcome.error and sock is not None:
                    sock.close()
                    sock = None
                outcome.done_at = time.monotonic()
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.error and self.stop_on_refused and refused:
                    return
                if outcome.error:
                    time.sleep(0.01)
                elif self.pause:
                    time.sleep(self.pause)
        finally:
            if sock is not None:
                sock.close()

    # --- Figures --------------------------------------------------------------------------

    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 201 and o.body and isinstance(o.body.get("id"), int)]

    def by_status(self) -> dict:
        counts: dict = {}
        for o in self.outcomes:
            key = o.status if o.status is not None else o.error.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        return counts


def lost(load: Load, rows: dict[int, tuple[int, bool]]) -> list[Outcome]:
    """Successful answers whose attempt is not stored exactly as answered."""
    return [o for o in load.ok() if rows.get(o.body["id"]) != (o.customer_id, o.body["result"])]


def figures(name: str, **facts) -> str:
    line = f"{name}: " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in facts.items())
    print(f"\n{line}")  # own line, after pytest's progress dots
    return line


# --- Faults -----------------------------------------------------------------------------------


class DatabaseLock:
    """Another process holding SQLite's write lock (BEGIN IMMEDIATE) until released."""

    SCRIPT = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
        "db.execute('ROLLBACK')\n"
    )

    def __init__(self, database: pathlib.Path, python: str):
        self.process = subprocess.Popen(
            [python, "-c", self.SCRIPT, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline()
        assert line.strip() == "locked", line

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def immutable(paths: list[pathlib.Path], on: bool) -> None:
    """chattr +i / -i: the kernel then refuses writes even to root and to already open files."""
    subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], check=True, capture_output=True)


def chattr_works(directory: pathlib.Path) -> str | None:
    """None if chattr +i really stops this (root) process from writing here, else why not."""
    probe = directory / "chattr-probe"
    probe.write_text("x")
    try:
        result = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
        if result.returncode != 0:
            return f"chattr +i failed: {result.stderr.strip()}"
        try:
            with probe.open("a") as f:
                f.write("y")
        except PermissionError:
            return None
        return "chattr +i set but root can still write the file"
    except FileNotFoundError:
        return "chattr is not installed"
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        probe.unlink()


def concurrently(count: int, fn, timeout: float = 60.0) -> list:
    """Run fn(i) for i in range(count) on `count` threads released together by a barrier."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i):
        barrier.wait(timeout)
        try:
            results[i] = fn(i)
        except Exception as exc:  # kept, asserted on by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads)
    return results


_ids = itertools.count(1)


def unique_customer() -> int:
    """Customer ids for single charges in a test, apart from the load ranges."""
    return 10_000 + next(_ids)
