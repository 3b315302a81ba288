"""Stopping a pod of the production shape under a steady stream of charges, the way the
kubelet stops it: every container's preStop hook at once (as the production Deployment
declares them), then each container's stop signal after its own hook, while the Service
still sends the pod new connections for a few seconds (the endpoint removal reaching
every node) and keeps the connections already open to it. Zero refused connections,
zero failed or lost charges (docs/reliability.md, "Stopping a pod").
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import threading
import time

import pytest

from harness import postgres
from harness.server import REPO, pod_path
from tests.kube import find, render
from tests.manifests.conftest import containers
from tests.reliability.harness import FaultServer, Load, figures, lost

pytestmark = [pytest.mark.server, pytest.mark.stress]

# How long the Service still sends new connections to a stopping pod: its EndpointSlice
# update reaching every node's proxy (about a second in a small cluster).
PROPAGATION_S = 3.0
CONNECTIONS = 8
PAUSE_S = 0.02


def stop_signals() -> dict[str, signal.Signals]:
    """The stop signal of each container's image: the payment image's STOPSIGNAL
    (Dockerfile), and nginx-unprivileged's SIGQUIT (its Dockerfile: a graceful quit)."""
    (payment,) = re.findall(r"^STOPSIGNAL (\w+)$", (REPO / "Dockerfile").read_text(), re.M) or ["SIGTERM"]
    return {"payment": signal.Signals[payment], "proxy": signal.SIGQUIT}


class Service:
    """A Service's choice of endpoint for each new connection; a removed endpoint gets no
    new connections, and connections already open to it stay (as conntrack keeps them)."""

    def __init__(self, ports: list[int]):
        self.endpoints = list(ports)
        self._turn = itertools.count()

    def route(self) -> int:
        endpoints = self.endpoints
        return endpoints[next(self._turn) % len(endpoints)]

    def remove(self, port: int) -> None:
        self.endpoints = [p for p in self.endpoints if p != port]


def stop_like_the_kubelet(pod: FaultServer, spec: dict) -> dict[str, tuple[float, float, int | None]]:
    """Each container: its preStop hook, then its image's stop signal to its main process,
    then SIGKILL at the end of the grace period. Returns {container: (hook done at,
    exited at, exit code)} in seconds from the start."""
    grace = spec["terminationGracePeriodSeconds"]
    processes = {"payment": pod.process, "proxy": pod.nginx}
    signals = stop_signals()
    started = time.monotonic()
    result = {}

    def stop(container: dict) -> None:
        hook = container.get("lifecycle", {}).get("preStop")
        if hook and "sleep" in hook:
            time.sleep(hook["sleep"]["seconds"])
        elif hook:
            # The container's own command, its /tmp moved where the local nginx has it.
            subprocess.run([pod_path(pod.data_dir, part) for part in hook["exec"]["command"]],
                           check=True, timeout=grace)
        hook_done = time.monotonic() - started
        process = processes[container["name"]]
        process.send_signal(signals[container["name"]])
        try:
            process.wait(max(0.1, grace - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        result[container["name"]] = (hook_done, time.monotonic() - started, process.returncode)

    threads = [threading.Thread(target=stop, args=(c,)) for c in spec["containers"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(grace + 20)
    return result


def test_stopping_a_production_pod_under_load_refuses_nothing_and_loses_nothing(tmp_path):
    deployment = find(render("overlays/production"), "Deployment", "payment", "payment")
    spec = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in containers(deployment)] == ["payment", "proxy"]
    env = {"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "1"}  # production's (payment-config)
    url = postgres.create_database()  # production: one PostgreSQL for every pod
    stopping = FaultServer(tmp_path / "stopping", env=env, proxy=True, database_url=url)
    other = FaultServer(tmp_path / "other", env=env, proxy=True, database_url=url)
    try:
        stopping.start()
        other.start()
        service = Service([stopping.port, other.port])
        load = Load(stopping.port, total=10**7, connections=CONNECTIONS, route=service.route, pause=PAUSE_S)
        load.start()
        time.sleep(2.0)  # kept-alive connections to both pods
        stop_at = time.monotonic()
        stopper = threading.Thread(target=lambda: exits.update(stop_like_the_kubelet(stopping, spec)))
        exits: dict = {}
        stopper.start()
        time.sleep(PROPAGATION_S)
        service.remove(stopping.port)
        stopper.join(spec["terminationGracePeriodSeconds"] + 30)
        time.sleep(1.0)  # the stream goes on, on the other pod
        load.stop()
        load.join(60)
        rows = {i: (c, bool(s)) for i, c, s in stopping.query("SELECT id, customer_id, succeeded FROM payment_app_chargeattempt")}
    finally:
        stopping.close()
        other.close()

    failed = [o for o in load.outcomes if o.status != 201]
    refused = [o for o in failed if o.error and "ConnectionRefused" in o.error]
    during_stop = [o for o in load.outcomes if o.port == stopping.port and o.sent_at >= stop_at]
    missing = lost(load, rows)
    figures("pod-stop", requests=len(load.outcomes), ok=len(load.ok()), failed=len(failed), refused=len(refused),
            stored=len(rows), lost=len(missing), served_by_stopping_pod_after_stop=len(during_stop),
            proxy_exit_s=exits["proxy"][1], payment_exit_s=exits["payment"][1],
            grace_s=spec["terminationGracePeriodSeconds"])
    assert not failed, [(o.status, o.error, o.port == stopping.port, round(o.sent_at - stop_at, 3)) for o in failed[:10]]
    assert not refused
    assert not missing and len(rows) == len(load.ok())
    # The stopping pod really served during its stop, and both containers quit by themselves, in order.
    assert during_stop
    assert exits["proxy"][2] == 0 and exits["payment"][2] == 0, exits
    assert exits["proxy"][1] < exits["payment"][0], exits  # nginx gone before gunicorn's SIGTERM
    assert exits["payment"][1] < spec["terminationGracePeriodSeconds"], exits
