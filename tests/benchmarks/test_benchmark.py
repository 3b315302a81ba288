"""The benchmark's own logic: reading wrk's report, the stored-rows check, the deployed
configuration read from the manifests, CPU limits, and a short run of each mode.

No timing assertions: the targets live in the printed figures (make bench), not in tests.
"""

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from benchmarks import wrk
from benchmarks.run import Config, Load, Plan, render
from benchmarks.servers import (
    BenchServer,
    children,
    container_cpu_limits,
    cpu_seconds,
    deployed_concurrency,
    memory,
    proxied,
)
from harness.cpu_limit import CpuLimit, parse_cpu
from harness.server import ANTAEUS_BODY, REPO

SAMPLE = """Running 2s test @ http://127.0.0.1:40000
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.91ms    1.20ms  19.02ms   88.10%
  1000 requests in 2.00s, 300.00KB read
Requests/sec:    500.00
BENCH_JSON {"duration_us":2000000,"requests":1000,"sent":1008,"answered":1000,"ok":990,"other":10,"no_result":1,"errors":{"connect":0,"read":2,"write":0,"status":10,"timeout":1},"latency_us":{"min":900,"mean":4910.0,"max":19020,"p50":4500,"p90":6100,"p99":12000,"p999":18000}}
"""


def test_wrk_report_is_read_from_the_scripts_json_line():
    result = wrk.parse(SAMPLE, connections=8)
    assert (result.sent, result.answered, result.ok, result.other_status) == (1008, 1000, 990, 10)
    assert result.rate == 495.0  # 2xx answers per second, not all answers
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (4.5, 6.1, 12.0)
    assert result.socket_errors == 3  # read + timeout; status errors are counted once, as "other"
    assert result.errors == 10 + 3 + 1
    assert result.unanswered == 8


def test_wrk_output_without_the_json_line_is_an_error():
    with pytest.raises(wrk.WrkError):
        wrk.parse(SAMPLE.replace("BENCH_JSON", "OTHER"), connections=8)


@pytest.mark.parametrize("stored, consistent", [(990, True), (998, True), (989, False), (999, False)])
def test_stored_rows_must_match_the_2xx_answers_up_to_the_requests_cut_at_stop(stored, consistent):
    assert wrk.parse(SAMPLE, connections=8).rows_consistent(stored) is consistent


def test_wrk_command_sends_the_antaeus_body_and_host(monkeypatch):
    monkeypatch.setattr(wrk.shutil, "which", lambda name: "/usr/bin/wrk")
    argv = wrk.command(8000, connections=32, duration_s=8)
    assert argv[-3:] == [ANTAEUS_BODY.decode(), "payment.payment.svc.cluster.local:8000", "/api/v1/charges"]
    assert "-c32" in argv and "-d8s" in argv and str(wrk.SCRIPT) in argv


def test_report_renders_with_no_configurations():
    assert "Charge path benchmark" in render(Plan(), [], "test machine")


def _config(proxy: bool, p99_ms: float) -> Config:
    result = dataclasses.replace(wrk.parse(SAMPLE, connections=32), p99_ms=p99_ms)
    return Config(database="sqlite", proxy=proxy, workers=2, threads=1, ready_fresh_s=0.8,
                  loads=[Load(result, rows=result.ok)])


def test_targets_are_judged_on_the_pod_at_32_connections():
    report = render(Plan(), [_config(True, 51.0), _config(False, 10.0)], "test machine")
    assert "- pod, sqlite 2x1: p99 at 32 connections 51.00 ms (< 50 ms) MISSED" in report
    assert "ready 0.80 s (< 2 s) met" in report
    assert "- gunicorn alone" not in report  # the figures show it; the targets are the pod's
    quick = dataclasses.replace(_config(True, 99.0), loads=[Load(wrk.parse(SAMPLE, connections=8), rows=990)])
    assert "p99" not in render(Plan(), [quick], "test machine").split("Targets")[1]


def test_the_default_plan_is_the_deployed_configuration():
    """Workers and threads as base/payment's ConfigMap sets them, the pod on both databases."""
    assert (Plan().workers, Plan().threads) == tuple((n,) for n in deployed_concurrency())
    assert Plan().databases == ("sqlite", "postgresql") and not Plan().direct
    assert proxied()  # this checkout's pod runs nginx in front of gunicorn


def test_children_and_memory_of_a_real_process():
    # Read once the child has started: while it is still loading, its memory grows between
    # the two /proc reads and PSS can come out above RSS.
    child = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        assert child.pid in children(os.getpid())
        mem = memory(child.pid)
        assert 0 < mem.pss_mib <= mem.rss_mib
    finally:
        child.kill()
        child.wait()


@pytest.mark.server
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)")
def test_a_short_run_of_the_pod_stores_a_row_per_answer():
    from benchmarks.run import measure

    config = measure("sqlite", True, 1, 1, Plan(connections=(2,), duration_s=1, sequential=20), log=lambda line: None)
    assert config.ready_fresh_s > 0 and config.ready_restart_s > 0
    assert config.sequential.errors == 0 and config.sequential.rows == 20
    (load,) = config.loads
    assert load.result.ok > 0 and load.result.errors == 0
    assert load.rows_ok
    assert load.app_cpu_us > 0 and load.proxy_cpu_us > 0  # nginx's CPU is counted apart
    assert config.memory and all(m.rss_mib > 0 for m in config.memory)


def test_compare_refuses_a_tree_that_is_not_a_checkout(tmp_path):
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--compare", str(tmp_path)])
    assert exited.value.code == 2


@pytest.mark.server
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)")
def test_compare_loads_every_server_in_turn_and_reports_each(capsys):
    """Two short cycles, this checkout given as the other tree: three servers up at once,
    each loaded, each row in the table, no errors and no charge lost."""
    from benchmarks.__main__ import main

    assert main(["--compare", str(REPO), "--direct", "--quick"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(f"| {REPO.name}:") or line.startswith("| this tree")]
    assert len(rows) == 3
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and cells[5] == "0"
    assert rows[0].split("|")[3].strip() == "1.00"


@pytest.mark.parametrize("quantity, cpus", [("1", 1.0), ("500m", 0.5), ("1.5", 1.5), (2, 2.0), ("250m", 0.25)])
def test_cpu_quantities_read_as_kubernetes_writes_them(quantity, cpus):
    assert parse_cpu(quantity) == cpus


def test_container_cpu_limits_come_from_the_deployment(tmp_path):
    manifest = tmp_path / "base" / "payment" / "deployment.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("""\
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: app
          resources: {limits: {cpu: "2", memory: 1Gi}}
        - name: sidecar
          resources: {limits: {cpu: 300m}}
        - name: unlimited
""")
    assert container_cpu_limits(tmp_path) == {"app": 2.0, "sidecar": 0.3}
    assert not proxied(tmp_path)  # no `proxy` container: gunicorn alone
    # The real one names the two containers --pod-limits confines.
    assert {"payment", "proxy"} <= set(container_cpu_limits())


def test_cpu_limit_without_a_writable_cgroup_file_system_says_what_to_do(tmp_path):
    with pytest.raises(PermissionError, match="--pod-limits needs a writable cgroup file system"):
        CpuLimit(1, root=tmp_path / "no-cgroups").create()


def _cpu_limit_or_skip(cpus: float) -> CpuLimit:
    try:
        return CpuLimit(cpus).create()
    except PermissionError as error:
        pytest.skip(str(error))


def test_cpu_limit_holds_a_busy_process_to_its_quota():
    """A process in a 0.1 CPU limit, spinning for 1 s, is throttled and gets far less than 1 s."""
    limit = _cpu_limit_or_skip(0.1)
    try:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=limit.join)
        try:
            time.sleep(1)
            used = cpu_seconds([spinner.pid])
        finally:
            spinner.kill()
            spinner.wait()
        assert limit.throttled_periods() > 0
        assert used < 0.5
    finally:
        limit.remove()
    assert limit.path is None


@pytest.mark.server
def test_pod_limits_confine_gunicorn_and_nginx_each_to_its_own_cgroup(tmp_path):
    """--pod-limits: master and workers share one limit, nginx has its own, both gone at close."""
    _cpu_limit_or_skip(1).remove()
    server = BenchServer(tmp_path, proxy=True, cpu_limit=1.0, nginx_cpu_limit=0.5).start()
    try:
        gunicorn, nginx = server.gunicorn_pids(), server.nginx_pids()
        paths = {name: limit.path for name, limit in server.limits.items()}

        def cgroup(pid):
            for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if controllers in ("", "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                    return path.rsplit("/", 1)[1]
        assert {cgroup(pid) for pid in gunicorn} == {paths["gunicorn"].name}
        assert {cgroup(pid) for pid in nginx} == {paths["nginx"].name}
        assert server.charge().status == 201
    finally:
        server.close()
    assert not any(path.exists() for path in paths.values())


def test_cpu_seconds_counts_the_processes_cpu_and_skips_gone_ones():
    before = cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert cpu_seconds([os.getpid()]) - before >= 0.1
    assert cpu_seconds([2**22 + 1]) == 0  # above the kernel's pid limit: no such process
