"""Driving wrk with benchmarks/charge.lua, and reading what it reports."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from dataclasses import dataclass

from harness.server import ANTAEUS_BODY, ANTAEUS_HOST

SCRIPT = pathlib.Path(__file__).resolve().parent / "charge.lua"
MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; counts as wrk saw them."""

    connections: int
    duration_s: float
    sent: int  # requests written (charge.lua's request() calls)
    answered: int  # responses read
    ok: int  # 2xx responses
    other_status: int  # answered, not 2xx
    no_result: int  # answered without a boolean "result" (would abort an Antaeus pay run)
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rate(self) -> float:
        """Successful charges per second."""
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.other_status + self.socket_errors + self.no_result

    @property
    def unanswered(self) -> int:
        """Requests written but not answered when wrk stopped: the server may still have
        committed them, so they bound the stored rows from above."""
        return max(self.sent - self.answered, 0)

    def rows_consistent(self, stored: int) -> bool:
        """Every 2xx answer was stored, and nothing was stored that was not asked for.

        A request cut off by the end of the run can be committed without its answer
        being read, so `stored` may exceed the 2xx count by the unanswered requests only.
        """
        return self.ok <= stored <= self.ok + self.unanswered


def parse(output: str, *, connections: int) -> WrkResult:
    """Read charge.lua's BENCH_JSON line from wrk's standard output."""
    lines = [line for line in output.splitlines() if line.startswith(MARKER)]
    if len(lines) != 1:
        raise WrkError(f"expected one {MARKER.strip()} line in wrk's output, found {len(lines)}:\n{output}")
    data = json.loads(lines[0][len(MARKER):])
    errors = data["errors"]
    latency = data["latency_us"]
    # wrk's own status-error count and the script's must agree; the script's is the one used.
    return WrkResult(
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        sent=data["sent"],
        answered=data["answered"],
        ok=data["ok"],
        other_status=data["other"],
        no_result=data["no_result"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        mean_ms=latency["mean"] / 1000,
    )


def executable() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not on PATH: `apt-get install wrk` (make bench installs it)")
    return path


def command(port: int, *, connections: int, duration_s: int, body: bytes = ANTAEUS_BODY,
            host: str = ANTAEUS_HOST, path: str = "/api/v1/charges") -> list[str]:
    # One wrk thread: an event loop drives 32 connections easily, and the load generator
    # shares the machine's cores with the server, so it should take as few as it can.
    return [
        executable(), "-t1", f"-c{connections}", f"-d{int(duration_s)}s", "--timeout", "5s",
        "-s", str(SCRIPT), f"http://127.0.0.1:{port}", "--", body.decode(), host, path,
    ]


def run(port: int, *, connections: int, duration_s: int, **kwargs) -> WrkResult:
    argv = command(port, connections=connections, duration_s=duration_s, **kwargs)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return parse(done.stdout, connections=connections)
