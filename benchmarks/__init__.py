"""Benchmark of the payment pod: `python -m benchmarks` (make bench). See docs/performance.md."""
