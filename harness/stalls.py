"""Stalled and trickling clients, and how long a valid charge takes while they hold
their connections open (docs/reliability.md, "Stalled clients").

    .venv/bin/python -m harness.stalls [--per-kind 4] [--charges 10] [--direct]

starts the service as the pod runs it (nginx in front of gunicorn; --direct: gunicorn
alone) and prints the figures; tests/reliability/test_stalled_clients.py runs the same
probe and asserts on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field

from harness.server import ANTAEUS_BODY, Server, antaeus_request, read_reply

# What a stuck client may have sent when it stops: part of the request line and headers,
# or all the headers and part of the body, either once (stalled) or a byte at a time.
_REQUEST = antaeus_request()
_HEAD_END = _REQUEST.index(b"\r\n\r\n") + 4
KINDS: dict[str, tuple[bytes, bytes]] = {
    # kind: (sent at once, then trickled one byte per tick)
    "silent": (b"", b""),
    "headers-stalled": (_REQUEST[:40], b""),
    "headers-trickled": (_REQUEST[:40], _REQUEST[40:_HEAD_END]),
    "body-stalled": (_REQUEST[:_HEAD_END + 10], b""),
    "body-trickled": (_REQUEST[:_HEAD_END + 1], ANTAEUS_BODY[1:]),
}


@dataclass
class Stallers:
    """Connections that each send part of a request, then stall or trickle."""

    port: int
    kinds: dict[str, int]
    tick_s: float = 0.5
    # The stuck client's address (any 127.0.0.0/8 address is local): apart from the valid
    # charges' 127.0.0.1, as in the pod, where nginx bounds requests per client address.
    source: str = "127.0.0.2"
    sockets: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "Stallers":
        plans = []
        for kind, count in self.kinds.items():
            first, trickle = KINDS[kind]
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(self.source, 0))
                if first:
                    sock.sendall(first)
                self.sockets.append(sock)
                plans.append((sock, trickle))
        self._thread = threading.Thread(target=self._trickle, args=(plans,), daemon=True)
        self._thread.start()
        return self

    def _trickle(self, plans: list[tuple[socket.socket, bytes]]) -> None:
        position = 0
        while not self._stop.wait(self.tick_s):
            for sock, trickle in plans:
                if position < len(trickle):
                    with contextlib.suppress(OSError):
                        sock.send(trickle[position:position + 1])
            position += 1

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sock in self.sockets:
            sock.close()


@dataclass
class SlowBodies:
    """`count` connections from the `sources` addresses (in turn), each sending a charge's
    headers (Content-Length 1000) and then its body a byte every `tick_s`: under nginx's
    body timeout, so only a bound on connections can stop them. Each ends up held (no
    answer yet), refused (an answer, whose status and error are kept) or reset."""

    port: int
    count: int
    sources: tuple[str, ...] = ("127.0.0.2",)
    tick_s: float = 2.0
    held: dict[socket.socket, float] = field(default_factory=dict)
    refused: list[tuple[int, dict | None]] = field(default_factory=list)
    reset: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    HEAD = antaeus_request(b"").replace(b"Content-Length: 0", b"Content-Length: 1000")

    def __enter__(self) -> "SlowBodies":
        for n in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                            source_address=(self.sources[n % len(self.sources)], 0))
            sock.sendall(self.HEAD + b"{")
            sock.setblocking(False)
            with self._lock:
                self.held[sock] = time.monotonic()
        self._thread = threading.Thread(target=self._tend, daemon=True)
        self._thread.start()
        return self

    def _tend(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for sock, last in list(self.held.items()):
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        if time.monotonic() - last >= self.tick_s:
                            with contextlib.suppress(OSError):
                                sock.send(b" ")
                            self.held[sock] = time.monotonic()
                        continue
                    except OSError:
                        data = b""
                    del self.held[sock]
                    if data.startswith(b"HTTP/1.1 "):
                        status = int(data[9:12])
                        body = data.partition(b"\r\n\r\n")[2]
                        try:
                            self.refused.append((status, json.loads(body)))
                        except ValueError:
                            self.refused.append((status, None))
                    else:
                        self.reset += 1
                    sock.close()

    def settle(self, quiet_s: float = 1.5, timeout: float = 30.0) -> int:
        """Wait until no connection has changed state for `quiet_s`; the number held."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                now = len(self.held)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                break
            time.sleep(0.1)
        return last

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sock in self.held:
            sock.close()


@dataclass(frozen=True)
class Probe:
    held: int
    latencies_s: list[float]
    statuses: list[int]

    @property
    def worst_s(self) -> float:
        return max(self.latencies_s)

    def describe(self) -> str:
        ordered = sorted(self.latencies_s)
        return (f"{self.held} stalled/trickling connections held: {len(ordered)} valid charges, "
                f"median {ordered[len(ordered) // 2] * 1000:.1f} ms, worst {ordered[-1] * 1000:.1f} ms, "
                f"statuses {sorted(set(self.statuses))}")


def timed_charge(port: int, timeout: float = 20.0) -> tuple[float, int]:
    """One valid charge on a new connection: (seconds to the full answer, status); status 0
    if no answer came within `timeout`."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(_REQUEST)
            status = read_reply(sock).status
    except TimeoutError:
        status = 0
    return time.monotonic() - started, status


def probe(port: int, kinds: dict[str, int], *, charges: int = 10, spacing_s: float = 0.3,
          settle_s: float = 0.5, timeout: float = 20.0) -> Probe:
    """Hold the stallers open, then time `charges` valid charges spaced over a few seconds."""
    with Stallers(port, kinds) as held:
        time.sleep(settle_s)  # let the server take every stalled connection in
        latencies, statuses = [], []
        for _ in range(charges):
            latency, status = timed_charge(port, timeout)
            latencies.append(latency)
            statuses.append(status)
            time.sleep(spacing_s)
        return Probe(len(held.sockets), latencies, statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.stalls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=4, help="connections of each kind (default 4)")
    parser.add_argument("--charges", type=int, default=10, help="valid charges timed (default 10)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)} (default all)")
    parser.add_argument("--direct", action="store_true", help="gunicorn alone, without the pod's nginx")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each charge (default 20)")
    parser.add_argument("--port", type=int, help="probe a server already listening here instead")
    args = parser.parse_args(argv)
    kinds = {kind: args.per_kind for kind in args.kinds.split(",")}
    if args.port:
        print(probe(args.port, kinds, charges=args.charges, timeout=args.timeout).describe())
        return 0
    with tempfile.TemporaryDirectory(prefix="stalls-") as data_dir:
        server = Server(pathlib.Path(data_dir), proxy=not args.direct).start()
        try:
            print(f"{'gunicorn alone' if args.direct else 'nginx in front of gunicorn'}, "
                  f"{server.environment()['WEB_CONCURRENCY']} workers x {server.environment().get('GUNICORN_THREADS', '1')} thread")
            print(f"idle: a valid charge took {timed_charge(server.port)[0] * 1000:.1f} ms")
            print(probe(server.port, kinds, charges=args.charges, timeout=args.timeout).describe())
        finally:
            server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
