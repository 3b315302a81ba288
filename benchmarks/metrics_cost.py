"""CPU cost of the metrics on the charge path, in the multiprocess mode gunicorn runs them in.

    .venv/bin/python -m benchmarks.metrics_cost

Times what one charge adds (its outcome, its duration, the HTTP request count and
duration) against the same updates in the client's default single-process mode, and one
scrape of the master's registry. Figures go to docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHARGE = (
    "metrics.charge_recorded(succeeded=True, created=True);"
    "metrics.charge_timed(started);"
    "metrics.http_request(route='charge-create', method='POST', status=201, seconds=0.001)"
)
SETUP = (
    "import os, time, django;"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'payment_project.settings');"
    "from payment_app import metrics;"
    "metrics.worker_started(success_rate=0.5);"
    "started = time.perf_counter()"
)
SCRAPE_SETUP = (
    SETUP + ";from prometheus_client import CollectorRegistry, generate_latest;"
    "from prometheus_client.multiprocess import MultiProcessCollector;"
    "registry = CollectorRegistry(); MultiProcessCollector(registry)"
)


def measure(multiprocess: bool) -> dict[str, float]:
    env = {**os.environ, "DJANGO_SECRET_KEY": "benchmark-only"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory() as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        code = (
            "import timeit, json;"
            f"n = 20000; t = min(timeit.repeat({CHARGE!r}, setup={SETUP!r}, number=n, repeat=5));"
            "out = {'per_charge_us': t / n * 1e6};"
            + (
                f"s = min(timeit.repeat('generate_latest(registry)', setup={SCRAPE_SETUP!r}, number=50, repeat=3));"
                "out['scrape_ms'] = s / 50 * 1e3;"
                if multiprocess
                else ""
            )
            + "print(json.dumps(out))"
        )
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    single, multi = measure(False), measure(True)
    print(f"metrics per charge, single-process mode: {single['per_charge_us']:.1f} us")
    print(f"metrics per charge, multiprocess mode:   {multi['per_charge_us']:.1f} us")
    print(f"one scrape of one worker's files:        {multi['scrape_ms']:.2f} ms")


if __name__ == "__main__":
    main()
