"""The benchmark run: each app, each worker count, each connection count."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field

from benchmarks import wrk
from benchmarks.servers import (
    BASELINE_COMMAND,
    SERVICE_COMMAND,
    BenchServer,
    Memory,
    container_cpu_limits,
    memory,
    server_environment,
)
from harness import postgres
from harness.server import antaeus_request, read_reply

APPS = {
    "service": SERVICE_COMMAND,
    "service-nginx": SERVICE_COMMAND,
    "service-nginx-postgresql": SERVICE_COMMAND,
    "baseline": BASELINE_COMMAND,
}
# As the pod runs it: the service behind base/payment/nginx.conf (docs/reliability.md).
PROXIED = {"service-nginx", "service-nginx-postgresql"}
# On a new database of the local PostgreSQL server (PAYMENT_TEST_POSTGRES_URL), as
# production runs it; the others on SQLite.
ON_POSTGRESQL = {"service-nginx-postgresql"}


@dataclass(frozen=True)
class Plan:
    workers: tuple[int, ...] = (1, 2, 4)
    # gthread threads per worker: 1 as deployed, and 4 to show what threads cost.
    threads: tuple[int, ...] = (1, 4)
    connections: tuple[int, ...] = (1, 8, 32)
    duration_s: int = 8
    warmup_s: int = 1
    sequential: int = 1000
    # service-nginx is the deployed configuration (SQLite); service-nginx-postgresql the
    # same on PostgreSQL, as production runs it; service is gunicorn alone, as before.
    apps: tuple[str, ...] = ("service-nginx", "service-nginx-postgresql", "service", "baseline")
    # Extra baseline runs with synchronous=NORMAL: what the fsync at each commit costs.
    normal_sync: bool = False
    # CPUs as the pod divides them: gunicorn on the first (the payment container's limit is
    # 1 CPU), nginx and wrk on the others. Empty: every process may run anywhere.
    pod_cpus: tuple[int, ...] = ()
    # Each of gunicorn and nginx under its container's limits.cpu (base/payment), as a CFS
    # quota the way the kubelet sets it; wrk runs unlimited beside them.
    pod_limits: bool = False


QUICK = Plan(workers=(2,), threads=(1,), connections=(1, 8), duration_s=2, sequential=100)


@dataclass(frozen=True)
class Sequential:
    """An Antaeus-like run: one kept-alive connection, one charge after another."""

    charges: int
    total_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    rows: int

    @property
    def per_charge_ms(self) -> float:
        return self.total_s * 1000 / self.charges


@dataclass(frozen=True)
class Load:
    result: wrk.WrkResult
    rows: int
    # CPU time per 2xx answer during the run: gunicorn's master and workers, and nginx. In
    # the pod each has its own CPU limit, so these bound throughput where the rates on a
    # shared machine only hint at it.
    app_cpu_us: float = 0.0
    proxy_cpu_us: float = 0.0

    @property
    def rows_ok(self) -> bool:
        return self.result.rows_consistent(self.rows)


@dataclass
class Config:
    """One app at one worker and thread count: its start-up, sequential run, loads and memory."""

    app: str
    workers: int
    threads: int
    ready_fresh_s: float = 0.0
    ready_restart_s: float = 0.0
    sequential: Sequential | None = None
    loads: list[Load] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.app if self.app != "baseline-normal" else "baseline, synchronous=NORMAL"


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
    total = time.perf_counter() - started
    return Sequential(
        charges=charges,
        total_s=total,
        p50_ms=statistics.median(latencies),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        errors=errors,
        rows=server.settled_rows() - before,
    )


def measure(app: str, workers: int, threads: int, plan: Plan, log=print) -> Config:
    command = APPS["baseline" if app == "baseline-normal" else app]
    extra = {"BENCH_SQLITE_SYNCHRONOUS": "NORMAL"} if app == "baseline-normal" else None
    config = Config(app=app, workers=workers, threads=threads)
    data_dir = tempfile.mkdtemp(prefix=f"bench-{app}-")
    from pathlib import Path

    limits = container_cpu_limits() if plan.pod_limits else {}
    server = BenchServer(
        Path(data_dir),
        env=server_environment(workers=workers, threads=threads, extra=extra),
        command=command,
        proxy=app in PROXIED,
        database_url=postgres.create_database() if app in ON_POSTGRESQL else None,
        cpus=frozenset(plan.pod_cpus[:1]) or None,
        nginx_cpus=frozenset(plan.pod_cpus[1:]) or None,
        cpu_limit=limits.get("payment"),
        nginx_cpu_limit=limits.get("proxy") if app in PROXIED else None,
    )
    try:
        server.start(wait=False)
        config.ready_fresh_s = server.wait_ready(60)
        log(f"  {app}, {workers} worker(s) x {threads} thread(s): ready in {config.ready_fresh_s:.2f} s")
        # Warm-up: every worker thread opens its database connection and imports lazily.
        wrk.run(server.port, connections=max(plan.connections), duration_s=plan.warmup_s)
        server.settled_rows()
        if plan.sequential:
            config.sequential = sequential_run(server, plan.sequential)
            s = config.sequential
            log(f"    sequential {s.charges}: {s.total_s:.2f} s, {s.per_charge_ms:.2f} ms/charge, "
                f"p50 {s.p50_ms:.2f} ms")
        for connections in plan.connections:
            before = server.settled_rows()
            result, app_cpu, proxy_cpu = server.load(connections=connections, duration_s=plan.duration_s)
            per_charge = 1e6 / max(result.ok, 1)
            load = Load(result, server.settled_rows() - before, app_cpu * per_charge, proxy_cpu * per_charge)
            config.loads.append(load)
            log(f"    {connections:>2} connections: {result.rate:8.1f} charges/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, CPU/charge gunicorn {load.app_cpu_us:.0f} us "
                f"nginx {load.proxy_cpu_us:.0f} us, errors {result.errors}, rows {load.rows} "
                f"({'ok' if load.rows_ok else 'MISMATCH'})")
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
    configs = []
    if plan.pod_cpus:
        # wrk is started from here: it runs beside nginx, off the application's CPU.
        os.sched_setaffinity(0, set(plan.pod_cpus[1:]))
    apps = list(plan.apps) + (["baseline-normal"] if plan.normal_sync else [])
    if ON_POSTGRESQL & set(apps) and (reason := postgres.unreachable_reason()):
        raise SystemExit(f"{reason} (or leave out {', '.join(sorted(ON_POSTGRESQL))} with --apps)")
    try:
        for workers in plan.workers:
            for threads in plan.threads:
                for app in apps:
                    configs.append(measure(app, workers, threads, plan, log))
    finally:
        postgres.drop_databases()
    return configs


def as_json(plan: Plan, configs: list[Config]) -> dict:
    def config(c: Config) -> dict:
        data = asdict(c)
        for load, raw in zip(c.loads, data["loads"]):
            raw["charges_per_s"] = load.result.rate
            raw["rows_ok"] = load.rows_ok
        return data

    return {"plan": asdict(plan), "configs": [config(c) for c in configs]}
