"""Loopback ports for the servers the tests and the benchmark start."""

from __future__ import annotations

import pathlib
import random
import socket

# Below this, the well-known ports of the machine's own services (PostgreSQL, Redis, ...).
LOWEST = 15000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The start of the kernel's range for automatic local ports (connect() without bind)."""
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port, never one handed out before in this process, and below the
    kernel's ephemeral range: a port taken from that range (bind to port 0) could be given
    to a client connection's local end before the server binds it, and thousands of
    client connections (the stall and load tests) make that happen."""
    high = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(LOWEST, high)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {LOWEST} and {high}")
