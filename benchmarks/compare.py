"""The comparison mode (--compare TREE): this checkout's pod against another checkout's
(another commit: `git worktree add TREE COMMIT`), all servers up at once.

wrk loads one server at a time for a short slice, in an order rotated every cycle, so a
machine whose speed drifts from second to second slows each server alike; whole runs one
after another swing with the drift. Rates are the 2xx answers summed over all slices; the
per-cycle ratios against the other tree show how far the sums can be trusted.
"""

from __future__ import annotations

import pathlib
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field

from benchmarks import wrk
from benchmarks.run import table
from benchmarks.servers import BenchServer, pod, proxied
from harness import postgres


@dataclass
class Contender:
    label: str
    server: BenchServer
    ok: int = 0
    seconds: float = 0.0
    errors: int = 0
    app_cpu_s: float = 0.0
    proxy_cpu_s: float = 0.0
    p99_ms: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # one per cycle

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def load(self, connections: int, slice_s: int) -> None:
        result, app_cpu_s, proxy_cpu_s = self.server.load(connections=connections, duration_s=slice_s)
        self.app_cpu_s += app_cpu_s
        self.proxy_cpu_s += proxy_cpu_s
        self.ok += result.ok
        self.seconds += result.duration_s
        self.errors += result.errors
        self.p99_ms.append(result.p99_ms)
        self.rates.append(result.rate)


def contenders(tree: pathlib.Path, data_dir: pathlib.Path, *, workers: int, threads: int, direct: bool,
               pod_limits: bool, database_url=lambda: None) -> list[Contender]:
    """A Contender for each server compared; the first, the other tree's pod, is the reference.
    database_url() gives each server its own database (None: SQLite)."""
    def server(name: str, **kwargs) -> BenchServer:
        return pod(data_dir / name, workers=workers, threads=threads, pod_limits=pod_limits,
                   database_url=database_url(), **kwargs)

    tree = tree.resolve()
    other = "nginx in front" if proxied(tree) else "gunicorn alone"
    found = [
        Contender(f"{tree.name}: pod ({other})", server("other", tree=tree, proxy=proxied(tree))),
        Contender("this tree: pod (nginx in front)", server("pod")),
    ]
    if direct:
        found.append(Contender("this tree: gunicorn alone", server("direct", proxy=False)))
    return found


def compare(contenders: list[Contender], *, cycles: int, slice_s: int, connections: int, log=print) -> None:
    for contender in contenders:  # warm-up: connections opened, lazy imports done
        contender.server.start()
        wrk.run(contender.server.port, connections=connections, duration_s=1)
    for cycle in range(cycles):
        shift = cycle % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            contender.load(connections, slice_s)
        log(f"  cycle {cycle + 1}/{cycles}: " + ", ".join(f"{c.rates[-1]:.0f}/s" for c in contenders))


def render(contenders: list[Contender]) -> str:
    reference = contenders[0]
    rows = []
    for c in contenders:
        ratios = [mine / theirs for mine, theirs in zip(c.rates, reference.rates) if theirs]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        rows.append([
            c.label, f"{c.rate:.0f}", f"{c.rate / reference.rate:.2f}",
            f"{quartiles[1]:.2f} ({quartiles[0]:.2f}-{quartiles[2]:.2f})",
            f"{statistics.median(c.p99_ms):.1f}", str(c.errors),
            f"{c.app_cpu_s * 1e6 / max(c.ok, 1):.0f}",
            f"{c.proxy_cpu_s * 1e6 / max(c.ok, 1):.0f}" if c.server.proxy else "",
        ])
    return table(["server", "charges/s", "ratio", "per-cycle ratio, median (quartiles)", "median p99 ms",
                  "errors", "gunicorn CPU us/charge", "nginx CPU us/charge"], rows)


def run(tree: pathlib.Path, *, database: str, workers: int, threads: int, direct: bool, pod_limits: bool,
        cycles: int, slice_s: int, connections: int, log=print) -> int:
    """Compare, print the table; 1 if any server answered an error or lost a charge."""
    if database == "postgresql" and (reason := postgres.unreachable_reason()):
        raise SystemExit(reason)
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench-compare-"))
    found = contenders(tree, data_dir, workers=workers, threads=threads, direct=direct, pod_limits=pod_limits,
                       database_url=postgres.create_database if database == "postgresql" else lambda: None)
    log(f"{cycles} cycles of {slice_s} s per server, {connections} connections, {workers} workers x {threads} "
        f"thread(s) on {database}" + (", under the pods' CPU limits" if pod_limits else ""))
    try:
        compare(found, cycles=cycles, slice_s=slice_s, connections=connections, log=log)
        stored = [c.server.settled_rows() for c in found]
    finally:
        for c in found:
            c.server.close()
        postgres.drop_databases()
        shutil.rmtree(data_dir, ignore_errors=True)
    log("")
    log(render(found))
    lost = [c.label for c, rows in zip(found, stored) if rows < c.ok]
    if lost:
        log(f"fewer rows stored than charges answered 2xx: {', '.join(lost)}")
    return 1 if lost or any(c.errors for c in found) else 0
