"""Benchmark of the charge path: `python -m benchmarks` (make bench). See docs/performance.md."""
