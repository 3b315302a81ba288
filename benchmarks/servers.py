"""The servers under test, started as the container starts the service, and what the
benchmark reads from them and from the manifests: stored rows, CPU time, worker memory,
the deployed worker counts and CPU limits."""

from __future__ import annotations

import os
import pathlib
import time
from dataclasses import dataclass

import yaml

from benchmarks import wrk
from harness.cpu_limit import parse_cpu
from harness.server import REPO, Server

# The Deployment whose containers' CPU limits --pod-limits applies, and the ConfigMap
# literals that set its worker and thread counts (both relative to a checkout).
DEPLOYMENT = pathlib.Path("base", "payment", "deployment.yaml")
KUSTOMIZATION = pathlib.Path("base", "payment", "kustomization.yaml")


def container_cpu_limits(tree: pathlib.Path = REPO) -> dict[str, float]:
    """limits.cpu of each container of the Deployment, in CPUs, by container name."""
    (deployment,) = [doc for doc in yaml.safe_load_all((tree / DEPLOYMENT).read_text())
                     if doc and doc["kind"] == "Deployment"]
    return {
        container["name"]: parse_cpu(container["resources"]["limits"]["cpu"])
        for container in deployment["spec"]["template"]["spec"]["containers"]
        if "cpu" in container.get("resources", {}).get("limits", {})
    }


def deployed_concurrency(tree: pathlib.Path = REPO) -> tuple[int, int]:
    """WEB_CONCURRENCY and GUNICORN_THREADS as base/payment deploys them."""
    (generator,) = [g for g in yaml.safe_load((tree / KUSTOMIZATION).read_text())["configMapGenerator"]
                    if g["name"] == "payment-config"]
    literals = dict(literal.split("=", 1) for literal in generator["literals"])
    return int(literals["WEB_CONCURRENCY"]), int(literals.get("GUNICORN_THREADS", "1"))


def proxied(tree: pathlib.Path = REPO) -> bool:
    """Whether that checkout's pod runs nginx (the `proxy` container) in front of gunicorn."""
    return "proxy" in container_cpu_limits(tree)


@dataclass
class BenchServer(Server):
    """harness.server.Server, plus what the benchmark reads."""

    def stored_rows(self) -> int:
        with self.db() as db:
            return db.execute("SELECT count(*) FROM payment_app_chargeattempt").fetchone()[0]

    def settled_rows(self, *, quiet_s: float = 0.3, timeout: float = 10.0) -> int:
        """The row count once requests still in flight have committed (stable for quiet_s)."""
        deadline = time.monotonic() + timeout
        count = self.stored_rows()
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.stored_rows()
            if now == count:
                return now
            count = now
        return count

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return children(self.process.pid)

    def gunicorn_pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *children(self.process.pid)]

    def nginx_pids(self) -> list[int]:
        return [self.nginx.pid, *children(self.nginx.pid)] if self.nginx is not None else []

    def load(self, *, connections: int, duration_s: int) -> tuple[wrk.WrkResult, float, float]:
        """A wrk run, and the CPU seconds gunicorn (master and workers) and nginx used during it."""
        app, proxy = cpu_seconds(self.gunicorn_pids()), cpu_seconds(self.nginx_pids())
        result = wrk.run(self.port, connections=connections, duration_s=duration_s)
        return (result, cpu_seconds(self.gunicorn_pids()) - app, cpu_seconds(self.nginx_pids()) - proxy)


def children(pid: int) -> list[int]:
    """Direct children of a process (gunicorn's master -> its workers)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the ppid follows the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (gone ones count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


@dataclass(frozen=True)
class Memory:
    """A process's memory in MiB: resident set (shared pages counted in full), and
    proportional set size (shared pages divided among the processes sharing them)."""

    rss_mib: float
    pss_mib: float


def memory(pid: int) -> Memory:
    def kib(path: str, key: str) -> int:
        for line in pathlib.Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(f"{key} not in /proc/{pid}/{path}")

    return Memory(rss_mib=kib("status", "VmRSS") / 1024, pss_mib=kib("smaps_rollup", "Pss") / 1024)


def pod(data_dir: pathlib.Path, *, workers: int, threads: int, proxy: bool = True, database_url: str | None = None,
        pod_limits: bool = False, tree: pathlib.Path = REPO) -> BenchServer:
    """The pod of `tree` as it deploys it: gunicorn behind nginx (proxy=False: gunicorn
    alone), on SQLite or the PostgreSQL database at database_url; with pod_limits, each
    process group under its container's limits.cpu in that tree's Deployment."""
    limits = container_cpu_limits(tree) if pod_limits else {}
    return BenchServer(
        data_dir,
        env={"WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads), "PAYMENT_SUCCESS_RATE": "0.5"},
        proxy=proxy,
        database_url=database_url,
        cpu_limit=limits.get("payment"),
        nginx_cpu_limit=limits.get("proxy") if proxy else None,
        tree=tree,
    )
