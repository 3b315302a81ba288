"""The printed report: Markdown tables, so a run can be pasted into docs/performance.md."""

from __future__ import annotations

from benchmarks.run import Config, Plan
from benchmarks.servers import container_cpu_limits

TARGETS = {
    "ratio": 0.6,  # service / baseline throughput at 32 connections
    "p99_ms": 50.0,  # at 32 connections
    "sequential_p50_ms": 2.0,
    "worker_rss_mib": 60.0,
    "ready_s": 2.0,
}


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _baseline_rate(configs: list[Config], workers: int, threads: int, connections: int) -> float | None:
    for c in configs:
        if c.app == "baseline" and (c.workers, c.threads) == (workers, threads):
            for load in c.loads:
                if load.result.connections == connections:
                    return load.result.rate
    return None


def ratio(configs: list[Config], config: Config, connections: int) -> float | None:
    if not config.app.startswith("service"):
        return None
    base = _baseline_rate(configs, config.workers, config.threads, connections)
    for load in config.loads:
        if load.result.connections == connections and base:
            return load.result.rate / base
    return None


def load_table(configs: list[Config]) -> str:
    rows = []
    for c in configs:
        for load in c.loads:
            r = load.result
            share = ratio(configs, c, r.connections)
            rows.append([
                c.label, f"{c.workers}x{c.threads}", str(r.connections), f"{r.rate:.0f}",
                f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", str(r.errors), str(r.ok),
                f"{load.rows}{'' if load.rows_ok else ' (MISMATCH)'}", str(r.unanswered),
                "" if share is None else f"{share:.2f}",
                f"{load.app_cpu_us:.0f}", f"{load.proxy_cpu_us:.0f}" if load.proxy_cpu_us else "",
            ])
    return table(
        ["app", "workers x threads", "connections", "charges/s", "p50 ms", "p90 ms", "p99 ms",
         "errors", "2xx", "rows stored", "cut at stop", "ratio to baseline", "gunicorn CPU us/charge",
         "nginx CPU us/charge"],
        rows,
    )


def process_table(configs: list[Config]) -> str:
    rows = []
    for c in configs:
        s = c.sequential
        rss = max((m.rss_mib for m in c.memory), default=0.0)
        pss = max((m.pss_mib for m in c.memory), default=0.0)
        rows.append([
            c.label, f"{c.workers}x{c.threads}", f"{c.ready_fresh_s:.2f}", f"{c.ready_restart_s:.2f}",
            f"{rss:.1f}", f"{pss:.1f}",
            *([f"{s.charges}", f"{s.total_s:.2f}", f"{s.per_charge_ms:.2f}", f"{s.p50_ms:.2f}",
               f"{s.p99_ms:.2f}", f"{s.errors}", f"{s.rows}"] if s else [""] * 7),
        ])
    return table(
        ["app", "workers x threads", "ready s (fresh DB)", "ready s (restart)", "RSS MiB/worker",
         "PSS MiB/worker", "sequential charges", "total s", "ms/charge", "p50 ms", "p99 ms", "errors", "rows"],
        rows,
    )


def verdicts(configs: list[Config]) -> list[str]:
    lines = []
    for c in configs:
        if not c.app.startswith("service"):
            continue
        share = ratio(configs, c, 32)
        p99 = next((l.result.p99_ms for l in c.loads if l.result.connections == 32), None)
        rss = max((m.rss_mib for m in c.memory), default=0.0)
        parts = []
        if share is not None and p99 is not None:
            parts.append(f"ratio at 32 connections {share:.2f} (target >= {TARGETS['ratio']}) "
                         f"{'met' if share >= TARGETS['ratio'] else 'MISSED'}")
            parts.append(f"p99 {p99:.1f} ms (< {TARGETS['p99_ms']:.0f}) {'met' if p99 < TARGETS['p99_ms'] else 'MISSED'}")
        if c.sequential:
            p50 = c.sequential.p50_ms
            parts.append(f"sequential p50 {p50:.2f} ms (< {TARGETS['sequential_p50_ms']}) "
                         f"{'met' if p50 < TARGETS['sequential_p50_ms'] else 'MISSED'}")
        parts.append(f"RSS/worker {rss:.1f} MiB (< {TARGETS['worker_rss_mib']:.0f}) "
                     f"{'met' if rss < TARGETS['worker_rss_mib'] else 'MISSED'}")
        parts.append(f"ready {c.ready_fresh_s:.2f} s fresh / {c.ready_restart_s:.2f} s restart "
                     f"(< {TARGETS['ready_s']}) {'met' if c.ready_fresh_s < TARGETS['ready_s'] else 'MISSED'}")
        lines.append(f"- {c.label} {c.workers}x{c.threads}: " + "; ".join(parts))
    return lines


def render(plan: Plan, configs: list[Config], machine: str) -> str:
    mismatches = [c for c in configs for l in c.loads if not l.rows_ok]
    out = [
        f"## Charge path benchmark ({machine})",
        "",
        f"wrk, 1 thread, {plan.duration_s} s per run after a {plan.warmup_s} s warm-up, stock Antaeus body; "
        "charges/s counts 2xx answers. Rows stored must lie between the 2xx count and 2xx + requests cut "
        "off unanswered when wrk stopped. CPU us/charge: the CPU time gunicorn (master and workers) and nginx "
        "used during the run, per 2xx answer; in the pod each container has its own CPU limit."
        + (f" Pinned as the pod's CPU limits divide the work: gunicorn on CPU {plan.pod_cpus[0]}, nginx and wrk "
           f"on CPU {','.join(map(str, plan.pod_cpus[1:]))}." if plan.pod_cpus else "")
        + (" Under the containers' CPU limits (base/payment/deployment.yaml) as CFS quotas: "
           + ", ".join(f"{name} {cpus:g} CPU" for name, cpus in container_cpu_limits().items()) + "."
           if plan.pod_limits else ""),
        "",
        load_table(configs),
        "",
        "Start-up (entrypoint start to /readyz 200), worker memory after the load "
        "(max over workers; RSS counts shared pages in full, PSS shares them), and an Antaeus-like "
        "sequential run on one kept-alive connection:",
        "",
        process_table(configs),
        "",
        "Targets (service-nginx is the deployed configuration on SQLite, service-nginx-postgresql on PostgreSQL):",
        *verdicts(configs),
    ]
    if mismatches:
        out += ["", "STORED ROWS DO NOT MATCH THE ANSWERS in: " + ", ".join(f"{c.app} {c.workers}x{c.threads}" for c in mismatches)]
    return "\n".join(out)
