"""python -m benchmarks [--quick] [--workers 1,2,4] [--threads 1,4] [--connections 1,8,32] [--duration 8]
[--pod-cpus 0,1 | --pod-limits] [--json PATH]"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys

from benchmarks import report, wrk
from benchmarks.run import QUICK, Plan, as_json, run
from harness.cpu_limit import CpuLimit


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 workers x 1 thread, 1 and 8 connections, 2 s each")
    parser.add_argument("--workers", type=_ints, help="gunicorn worker counts (default 1,2,4)")
    parser.add_argument("--threads", type=_ints, help="gthread threads per worker (default 1,4; 1 is deployed)")
    parser.add_argument("--connections", type=_ints, help="wrk connection counts (default 1,8,32)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 8)")
    parser.add_argument("--sequential", type=int, help="charges in the sequential run (default 1000; 0: skip)")
    parser.add_argument("--apps", help="comma list of service-nginx,service-nginx-postgresql,service,baseline (default all four)")
    parser.add_argument("--normal-sync", action="store_true",
                        help="also run the baseline with synchronous=NORMAL, to show the fsync cost")
    parser.add_argument("--pod-cpus", type=_ints, metavar="APP,OTHER[,...]",
                        help="pin gunicorn to the first CPU and nginx and wrk to the others, as the pod's "
                        "per-container CPU limits divide them (e.g. 0,1)")
    parser.add_argument("--pod-limits", action="store_true",
                        help="run gunicorn and nginx each under its container's limits.cpu in "
                        "base/payment/deployment.yaml, as CFS quotas (needs a writable cgroup file system)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else Plan()
    overrides = {
        "workers": args.workers, "threads": args.threads, "connections": args.connections,
        "duration_s": args.duration, "sequential": args.sequential,
        "apps": tuple(args.apps.split(",")) if args.apps else None,
        "normal_sync": args.normal_sync or None,
        "pod_cpus": args.pod_cpus,
        "pod_limits": args.pod_limits or None,
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    if plan.pod_cpus:
        available = os.sched_getaffinity(0)
        if len(plan.pod_cpus) < 2 or not set(plan.pod_cpus) <= available:
            parser.error(f"--pod-cpus needs two or more of the CPUs this process may use ({sorted(available)})")
    if plan.pod_limits:
        try:
            CpuLimit(1).create().remove()
        except PermissionError as error:
            parser.error(str(error))
    wrk.executable()  # fail early, with the install hint

    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    print(f"benchmark plan: {plan}", flush=True)
    configs = run(plan, log=lambda line: print(line, flush=True))
    print()
    print(report.render(plan, configs, machine))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(as_json(plan, configs), out, indent=2)
    mismatched = any(not load.rows_ok for c in configs for load in c.loads)
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
