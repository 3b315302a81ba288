"""Instructions a gunicorn worker executes per charge, served over HTTP, counted by callgrind.

    python -m benchmarks.worker_instructions [--proxy] [--charges 320] [--connections 8]

Starts the service as the container does, with one worker under valgrind's callgrind
(--proxy: behind the pod's nginx), sends charges over kept-alive connections, and counts
the worker's instructions; twice, with 80 and with 80 + --charges charges, so start-up
cancels out. Unlike benchmarks.instructions this includes gunicorn (HTTP parsing, the
gthread poller, the log line, the metrics files). The worker's loops depend a little on
timing, so runs of one tree vary by a few percent: repeat and compare ranges. Run from the
tree to measure; about 4 minutes; needs valgrind.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import socket
import sys
import tempfile
import threading
import time

from benchmarks.instructions import require_valgrind
from harness.server import Server, antaeus_request, read_reply

BASE_CHARGES = 80


def worker_instructions(*, proxy: bool, charges: int, connections: int) -> int:
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="payment-worker-callgrind-"))
    command = ("valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={data_dir}/cg.%p",
               "gunicorn", "--config", "gunicorn.conf.py", "payment_project.wsgi")
    server = Server(data_dir / "server", proxy=proxy, command=command,
                    env={"WEB_CONCURRENCY": "1", "PYTHONHASHSEED": "0"})

    def client(count: int) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=300) as sock:
            for _ in range(count):
                sock.sendall(antaeus_request())
                reply = read_reply(sock)
                if reply.status != 201:
                    raise RuntimeError(f"charge answered {reply.status}")

    def load(total: int) -> None:
        threads = [threading.Thread(target=client, args=(total // connections,)) for _ in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    try:
        server.start(wait=False)
        server.wait_ready(600)
        (worker,) = server.workers()
        load(charges)
    finally:
        server.close()
    try:
        time.sleep(2)  # callgrind writes the worker's counts as it exits
        for line in (data_dir / f"cg.{worker}").read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise SystemExit(f"no totals in the worker's callgrind file ({data_dir})")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxy", action="store_true", help="behind the pod's nginx (base/payment/nginx.conf)")
    parser.add_argument("--charges", type=int, default=320)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    require_valgrind()
    base = worker_instructions(proxy=args.proxy, charges=BASE_CHARGES, connections=args.connections)
    more = worker_instructions(proxy=args.proxy, charges=BASE_CHARGES + args.charges, connections=args.connections)
    where = "behind nginx" if args.proxy else "gunicorn alone"
    print(f"{(more - base) / args.charges:,.0f} instructions per charge in the worker ({where}, "
          f"{args.charges} charges over {args.connections} connections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
