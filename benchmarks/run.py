"""The measuring run: each database, worker and thread count, then each connection count,
one server after another; and its report, as Markdown tables."""

from __future__ import annotations

import pathlib
import shutil
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field

from benchmarks import wrk
from benchmarks.servers import BenchServer, Memory, container_cpu_limits, deployed_concurrency, memory, pod
from harness import postgres
from harness.server import antaeus_request, read_reply

_WORKERS, _THREADS = deployed_concurrency()
# What the pod as deployed should reach (docs/performance.md, "Targets"); p99 at 32 connections.
TARGETS = {"p99_ms": 50.0, "sequential_p50_ms": 2.0, "worker_rss_mib": 60.0, "ready_s": 2.0}


@dataclass(frozen=True)
class Plan:
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    workers: tuple[int, ...] = (_WORKERS,)  # as base/payment deploys them
    threads: tuple[int, ...] = (_THREADS,)
    connections: tuple[int, ...] = (1, 8, 32)
    duration_s: int = 8
    warmup_s: int = 1
    sequential: int = 1000
    direct: bool = False  # also gunicorn alone, without the pod's nginx
    pod_limits: bool = False  # gunicorn and nginx under their containers' limits.cpu


QUICK = Plan(connections=(1, 8), duration_s=2, sequential=100)


@dataclass(frozen=True)
class Sequential:
    """An Antaeus-like run: one kept-alive connection, one charge after another."""

    charges: int
    total_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rows: int


@dataclass(frozen=True)
class Load:
    result: wrk.WrkResult
    rows: int
    # CPU time per 2xx answer during the run, gunicorn (master and workers) and nginx. In
    # the pod each has its own CPU limit, so these bound its throughput where rates on a
    # shared machine only hint at it.
    app_cpu_us: float = 0.0
    proxy_cpu_us: float = 0.0

    @property
    def rows_ok(self) -> bool:
        return self.result.rows_consistent(self.rows)


@dataclass
class Config:
    """One server at one worker and thread count: start-up, sequential run, loads, memory."""

    database: str
    proxy: bool
    workers: int
    threads: int
    ready_fresh_s: float = 0.0
    ready_restart_s: float = 0.0
    sequential: Sequential | None = None
    loads: list[Load] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{'pod' if self.proxy else 'gunicorn alone'}, {self.database}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def sequential_run(server: BenchServer, charges: int) -> Sequential:
    before = server.stored_rows()
    latencies, errors = [], 0
    raw = antaeus_request()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(charges):
            t0 = time.perf_counter()
            sock.sendall(raw)
            reply = read_reply(sock)
            latencies.append((time.perf_counter() - t0) * 1000)
            if reply.status != 201 or not isinstance(reply.json().get("result"), bool):
                errors += 1
    return Sequential(charges=charges, total_s=time.perf_counter() - started, p50_ms=statistics.median(latencies),
                      p99_ms=percentile(latencies, 99), errors=errors, rows=server.settled_rows() - before)


def measure(database: str, proxy: bool, workers: int, threads: int, plan: Plan, log=print) -> Config:
    config = Config(database=database, proxy=proxy, workers=workers, threads=threads)
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench-"))
    server = pod(data_dir, workers=workers, threads=threads, proxy=proxy, pod_limits=plan.pod_limits,
                 database_url=postgres.create_database() if database == "postgresql" else None)
    try:
        server.start(wait=False)
        config.ready_fresh_s = server.wait_ready(60)
        log(f"  {config.label}, {workers} worker(s) x {threads} thread(s): ready in {config.ready_fresh_s:.2f} s")
        # Warm-up: every worker thread opens its database connection and imports lazily.
        wrk.run(server.port, connections=max(plan.connections), duration_s=plan.warmup_s)
        server.settled_rows()
        if plan.sequential:
            s = config.sequential = sequential_run(server, plan.sequential)
            log(f"    sequential {s.charges}: {s.total_s:.2f} s, p50 {s.p50_ms:.2f} ms")
        for connections in plan.connections:
            before = server.settled_rows()
            result, app_cpu, proxy_cpu = server.load(connections=connections, duration_s=plan.duration_s)
            per_charge = 1e6 / max(result.ok, 1)
            load = Load(result, server.settled_rows() - before, app_cpu * per_charge, proxy_cpu * per_charge)
            config.loads.append(load)
            log(f"    {connections:>2} connections: {result.rate:8.1f} charges/s, p99 {result.p99_ms:.2f} ms, "
                f"CPU/charge gunicorn {load.app_cpu_us:.0f} us nginx {load.proxy_cpu_us:.0f} us, "
                f"errors {result.errors}, rows {load.rows} ({'ok' if load.rows_ok else 'MISMATCH'})")
        config.memory = [memory(pid) for pid in server.worker_pids()]
        server.stop()
        # A pod restart: the database and its schema exist, migrate has nothing to do.
        server.start(wait=False)
        config.ready_restart_s = server.wait_ready(60)
    except Exception:
        log(server.log()[-4000:])
        raise
    finally:
        server.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return config


def run(plan: Plan, log=print) -> list[Config]:
    if "postgresql" in plan.databases and (reason := postgres.unreachable_reason()):
        raise SystemExit(f"{reason} (or measure SQLite only: --database sqlite)")
    configs = []
    try:
        for workers in plan.workers:
            for threads in plan.threads:
                for database in plan.databases:
                    for proxy in (True, False) if plan.direct else (True,):
                        configs.append(measure(database, proxy, workers, threads, plan, log))
    finally:
        postgres.drop_databases()
    return configs


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def load_table(configs: list[Config]) -> str:
    rows = []
    for c in configs:
        for load in c.loads:
            r = load.result
            rows.append([
                c.label, f"{c.workers}x{c.threads}", str(r.connections), f"{r.rate:.0f}", f"{r.p50_ms:.2f}",
                f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", str(r.errors), str(r.ok),
                f"{load.rows}{'' if load.rows_ok else ' (MISMATCH)'}", str(r.unanswered),
                f"{load.app_cpu_us:.0f}", f"{load.proxy_cpu_us:.0f}" if c.proxy else "",
            ])
    return table(["server", "workers x threads", "connections", "charges/s", "p50 ms", "p90 ms", "p99 ms", "errors",
                  "2xx", "rows stored", "cut at stop", "gunicorn CPU us/charge", "nginx CPU us/charge"], rows)


def process_table(configs: list[Config]) -> str:
    rows = []
    for c in configs:
        s = c.sequential
        rows.append([
            c.label, f"{c.workers}x{c.threads}", f"{c.ready_fresh_s:.2f}", f"{c.ready_restart_s:.2f}",
            f"{max((m.rss_mib for m in c.memory), default=0.0):.1f}",
            f"{max((m.pss_mib for m in c.memory), default=0.0):.1f}",
            *([str(s.charges), f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", str(s.errors), str(s.rows)] if s else [""] * 5),
        ])
    return table(["server", "workers x threads", "ready s (fresh DB)", "ready s (restart)", "RSS MiB/worker",
                  "PSS MiB/worker", "sequential charges", "p50 ms", "p99 ms", "errors", "rows"], rows)


def verdicts(configs: list[Config]) -> list[str]:
    def check(name: str, value: float, target: float, unit: str) -> str:
        return f"{name} {value:.2f}{unit} (< {target:g}{unit}) {'met' if value < target else 'MISSED'}"

    lines = []
    for c in configs:
        if not c.proxy:
            continue
        parts = [check("p99 at 32 connections", load.result.p99_ms, TARGETS["p99_ms"], " ms")
                 for load in c.loads if load.result.connections == 32]
        if c.sequential:
            parts.append(check("sequential p50", c.sequential.p50_ms, TARGETS["sequential_p50_ms"], " ms"))
        parts.append(check("RSS/worker", max((m.rss_mib for m in c.memory), default=0.0),
                           TARGETS["worker_rss_mib"], " MiB"))
        parts.append(check("ready", c.ready_fresh_s, TARGETS["ready_s"], " s"))
        lines.append(f"- {c.label} {c.workers}x{c.threads}: " + "; ".join(parts))
    return lines


def render(plan: Plan, configs: list[Config], machine: str) -> str:
    limits = (" Under the containers' CPU limits (base/payment/deployment.yaml) as CFS quotas: "
              + ", ".join(f"{name} {cpus:g} CPU" for name, cpus in container_cpu_limits().items()) + "."
              if plan.pod_limits else "")
    out = [
        f"## Charge path benchmark ({machine})",
        "",
        f"wrk, 1 thread, {plan.duration_s} s per run after a {plan.warmup_s} s warm-up, stock Antaeus body; "
        "charges/s counts 2xx answers. Rows stored must lie between the 2xx count and 2xx + requests cut "
        "off unanswered when wrk stopped. CPU us/charge: the CPU time gunicorn (master and workers) and nginx "
        "used during the run, per 2xx answer." + limits,
        "",
        load_table(configs),
        "",
        "Start-up (entrypoint start to /readyz 200), worker memory after the load (max over workers; RSS counts "
        "shared pages in full, PSS shares them), and an Antaeus-like sequential run on one kept-alive connection:",
        "",
        process_table(configs),
        "",
        "Targets (the pod as deployed):",
        *verdicts(configs),
    ]
    mismatched = [c.label for c in configs if any(not load.rows_ok for load in c.loads)]
    if mismatched:
        out += ["", "STORED ROWS DO NOT MATCH THE ANSWERS in: " + ", ".join(mismatched)]
    return "\n".join(out)
