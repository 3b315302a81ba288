"""A container's CPU limit as the kubelet enforces it: a CFS quota on a cgroup.

The benchmark's --pod-limits runs gunicorn and nginx each under its container's
`limits.cpu`, so that a proxy's CPU comes out of its own allowance, as in the pod, and
not out of the application's (docs/performance.md). Written for cgroup v1 (the cpu
controller's hierarchy; the tests run it) and v2 (the unified one; not yet run on a v2
machine). Both need write access to the cgroup file system, which root in a container
often has; without it, create() says so.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from dataclasses import dataclass

ROOT = pathlib.Path("/sys/fs/cgroup")
# The kubelet's default CFS period: a limit of 1 CPU is 100 ms of CPU time per 100 ms.
PERIOD_US = 100_000


def parse_cpu(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("1", "500m", 0.5) in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


@dataclass
class CpuLimit:
    """A new cgroup allowing `cpus` CPUs; processes started with `join` as their
    preexec_fn run in it, with everything they fork."""

    cpus: float
    root: pathlib.Path = ROOT
    path: pathlib.Path | None = None

    @property
    def unified(self) -> bool:
        return (self.root / "cgroup.controllers").exists()

    def create(self) -> "CpuLimit":
        quota = round(self.cpus * PERIOD_US)
        parent = self.root if self.unified else self.root / "cpu"
        try:
            if self.unified and "cpu" not in (self.root / "cgroup.subtree_control").read_text().split():
                (self.root / "cgroup.subtree_control").write_text("+cpu")
            self.path = pathlib.Path(tempfile.mkdtemp(prefix="payment-bench-", dir=parent))
            if self.unified:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError as error:
            self.remove()
            raise PermissionError(
                f"cannot set a CPU limit under {parent} ({error}): --pod-limits needs a writable "
                "cgroup file system (root, or a delegated cgroup)"
            ) from error
        return self

    def join(self) -> None:
        """Move the calling process into the cgroup (a preexec_fn: runs in the child)."""
        assert self.path is not None
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def throttled_periods(self) -> int:
        """How many CFS periods the cgroup ran out of quota in (cpu.stat)."""
        assert self.path is not None
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["nr_throttled"])

    def remove(self) -> None:
        """Delete the cgroup; its processes must have exited."""
        if self.path is not None:
            os.rmdir(self.path)
            self.path = None
