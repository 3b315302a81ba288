"""python -m benchmarks.interleaved [--before TREE] [--cycles 30] [--slice 2] [--connections 32] [--pod-limits]

The deployed configuration against gunicorn alone and, with --before, against another
checkout's service (an earlier commit: `git worktree add TREE COMMIT`), all up at once.
wrk loads one server at a time for a short slice, in an order rotated every cycle, so
a machine whose speed drifts from second to second slows each server alike; make bench
runs each server for whole seconds in turn and its ratios swing with the drift
(docs/performance.md). Rates are the 2xx answers summed over all slices; the per-cycle
ratios show how far the sums can be trusted.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field

from benchmarks import wrk
from benchmarks.report import table
from benchmarks.servers import DEPLOYMENT, BenchServer, container_cpu_limits, server_environment
from harness import postgres
from harness.server import REPO

WORKERS, THREADS = 2, 1  # as base/payment deploys them


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


def contenders(before: pathlib.Path | None, pod_limits: bool, data_dir: pathlib.Path) -> list[Contender]:
    """A Contender for each configuration compared; the first is the reference."""
    env = server_environment(workers=WORKERS, threads=THREADS)
    limits = container_cpu_limits() if pod_limits else {}
    found = []
    if before is not None:
        # That tree's pod as it deployed it, with that tree's limit on the payment container.
        before_limit = container_cpu_limits(before / DEPLOYMENT.relative_to(REPO)) if pod_limits else {}
        found.append(Contender(f"{before.name}: gunicorn alone (as deployed there)", BenchServer(
            data_dir / "before", env=env, tree=before.resolve(), cpu_limit=before_limit.get("payment"))))
    found.append(Contender("this tree: behind nginx (as deployed)", BenchServer(
        data_dir / "nginx", env=env, proxy=True, cpu_limit=limits.get("payment"),
        nginx_cpu_limit=limits.get("proxy"))))
    found.append(Contender("this tree: gunicorn alone", BenchServer(
        data_dir / "alone", env=env, cpu_limit=limits.get("payment"))))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interleaved", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=pathlib.Path, metavar="TREE",
                        help="another checkout of this repository, run first as the reference")
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--slice", type=int, default=2, help="seconds of wrk per server per cycle")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pod-limits", action="store_true",
                        help="each server's gunicorn and nginx under their containers' limits.cpu (CFS quotas)")
    args = parser.parse_args(argv)
    if args.before is not None and not (args.before / "scripts" / "entrypoint").is_file():
        parser.error(f"{args.before} is not a checkout of this repository (no scripts/entrypoint)")
    wrk.executable()
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench-interleaved-"))
    found = contenders(args.before, args.pod_limits, data_dir)
    print(f"{args.cycles} cycles of {args.slice} s per server, {args.connections} connections, "
          f"{WORKERS} workers x {THREADS} thread" + (", under the pods' CPU limits" if args.pod_limits else ""),
          flush=True)
    try:
        compare(found, cycles=args.cycles, slice_s=args.slice, connections=args.connections,
                log=lambda line: print(line, flush=True))
        stored = [c.server.settled_rows() for c in found]
    finally:
        for c in found:
            c.server.close()
        postgres.drop_databases()
        shutil.rmtree(data_dir, ignore_errors=True)
    print()
    print(render(found))
    lost = [c.label for c, rows in zip(found, stored) if rows < c.ok]
    if lost:
        print(f"fewer rows stored than charges answered 2xx: {', '.join(lost)}")
    return 1 if lost or any(c.errors for c in found) else 0


if __name__ == "__main__":
    sys.exit(main())
