"""CPU time per charge inside one process: the Django/DRF charge path without gunicorn,
the network or other processes, so it can be compared across commits on a busy machine.

    python -m benchmarks.cpu [--charges 3000] [--rounds 5] [--database-url URL]

Run from the tree to measure (it imports that tree's payment_project). Prints the CPU
microseconds per charge of each round and their median. SQLite by default, in a
temporary directory; `--database-url` measures PostgreSQL instead.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time

BODY = b'{"currency":{},"customer_id":1,"value":301.99}'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__)
    parser.add_argument("--charges", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temporary directory)")
    parser.add_argument("--no-sync", action="store_true",
                        help="SQLite with synchronous=OFF: leaves out the fsync, whose kernel time varies most")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the measured rounds to PATH")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="payment-cpu-")
    os.environ.update(
        DJANGO_SECRET_KEY="benchmark-only", DATABASE_PATH=os.path.join(workdir, "payment.sqlite3"),
        STATIC_ROOT=workdir, DJANGO_ALLOWED_HOSTS="payment.payment.svc.cluster.local", LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="payment_project.settings",
    )
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    sys.path.insert(0, os.getcwd())
    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connection

    if args.no_sync and connection.vendor == "sqlite":
        connection.close()
        connection.settings_dict["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL;PRAGMA synchronous=OFF"
    call_command("migrate", verbosity=0)
    from payment_project.wsgi import application

    def environ() -> dict:
        return {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/charges", "SERVER_NAME": "payment", "SERVER_PORT": "8000",
            "HTTP_HOST": "payment.payment.svc.cluster.local:8000", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(BODY)), "HTTP_ACCEPT": "*/*", "HTTP_USER_AGENT": "khttp/1.0.0-SNAPSHOT",
            "wsgi.input": io.BytesIO(BODY), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False, "SERVER_PROTOCOL": "HTTP/1.1",
        }

    def start_response(status, headers, exc_info=None):
        if not status.startswith("201"):
            raise SystemExit(f"charge answered {status}")

    for _ in range(200):  # warm-up: imports, caches, the connection
        b"".join(application(environ(), start_response))
    per_charge = []
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for round_ in range(args.rounds):
        started = time.process_time()
        for _ in range(args.charges):
            b"".join(application(environ(), start_response))
        per_charge.append((time.process_time() - started) / args.charges * 1e6)
        print(f"round {round_ + 1}: {per_charge[-1]:.1f} us CPU per charge", flush=True)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    print(f"median: {statistics.median(per_charge):.1f} us CPU per charge over {args.rounds} x {args.charges} charges")
    return 0


if __name__ == "__main__":
    sys.exit(main())
