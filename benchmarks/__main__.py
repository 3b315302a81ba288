"""python -m benchmarks (make bench): throughput, latency, CPU per charge, memory and start-up
of the payment pod as deployed (nginx in front of gunicorn, base/payment's worker counts),
on SQLite and on PostgreSQL, driven by wrk with the stock Antaeus request; or, with
--compare TREE, this checkout's pod against another checkout's, in alternating short turns.
docs/performance.md explains every figure."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import sys

from benchmarks import compare, wrk
from benchmarks.run import QUICK, Plan, render, run
from harness.cpu_limit import CpuLimit

DATABASES = ("sqlite", "postgresql")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _databases(text: str) -> tuple[str, ...]:
    names = tuple(part for part in text.split(",") if part)
    if not names or set(names) - set(DATABASES):
        raise argparse.ArgumentTypeError(f"a comma list of {', '.join(DATABASES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 and 8 connections for 2 s (--compare: 2 cycles of 1 s at 4 connections)")
    parser.add_argument("--database", type=_databases,
                        help="sqlite, postgresql or both (default both; --compare: sqlite); PostgreSQL is the "
                        "machine's server at PAYMENT_TEST_POSTGRES_URL, a new database per server")
    parser.add_argument("--workers", type=_ints, help="gunicorn workers, a comma list (default: as deployed)")
    parser.add_argument("--threads", type=_ints, help="gthread threads per worker, a comma list (default: as deployed)")
    parser.add_argument("--connections", type=_ints, help="wrk connections, a comma list (default 1,8,32; --compare 32)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 8; --compare: per turn, 2)")
    parser.add_argument("--sequential", type=int, help="charges in the one-connection run (default 1000; 0: none)")
    parser.add_argument("--direct", action="store_true", help="also gunicorn alone, without the pod's nginx")
    parser.add_argument("--pod-limits", action="store_true",
                        help="gunicorn and nginx each under its container's limits.cpu in base/payment/deployment.yaml, "
                        "as CFS quotas the way the kubelet sets them (needs a writable cgroup file system)")
    parser.add_argument("--compare", type=pathlib.Path, metavar="TREE",
                        help="another checkout of this repository: its pod, this one's (and with --direct gunicorn "
                        "alone) loaded in turn, the order rotated every cycle")
    parser.add_argument("--cycles", type=int, help="--compare: turns per server (default 30)")
    args = parser.parse_args(argv)

    if args.pod_limits:
        try:
            CpuLimit(1).create().remove()
        except PermissionError as error:
            parser.error(str(error))
    if args.compare is not None and not (args.compare / "scripts" / "entrypoint").is_file():
        parser.error(f"{args.compare} is not a checkout of this repository (no scripts/entrypoint)")
    try:
        wrk.executable()
    except wrk.WrkError as error:
        parser.error(str(error))

    if args.compare is not None:
        return _compare(parser, args)
    plan = QUICK if args.quick else Plan()
    overrides = {
        "databases": args.database, "workers": args.workers, "threads": args.threads,
        "connections": args.connections, "duration_s": args.duration, "sequential": args.sequential,
        "direct": args.direct or None, "pod_limits": args.pod_limits or None,
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    print(f"benchmark plan: {plan}", flush=True)
    configs = run(plan, log=lambda line: print(line, flush=True))
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    print()
    print(render(plan, configs, machine))
    return 1 if any(not load.rows_ok for c in configs for load in c.loads) else 0


def _compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    database = args.database or ("sqlite",)
    workers, threads = args.workers or Plan().workers, args.threads or Plan().threads
    connections = args.connections or ((4,) if args.quick else (32,))
    if len(database) != 1 or len(workers) != 1 or len(threads) != 1 or len(connections) != 1:
        parser.error("--compare takes one database, worker, thread and connection count")
    return compare.run(
        args.compare, database=database[0], workers=workers[0], threads=threads[0], direct=args.direct,
        pod_limits=args.pod_limits, connections=connections[0],
        cycles=args.cycles or (2 if args.quick else 30), slice_s=args.duration or (1 if args.quick else 2),
        log=lambda line: print(line, flush=True),
    )


if __name__ == "__main__":
    sys.exit(main())
