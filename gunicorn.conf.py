"""gunicorn settings for the payment service, read from the environment.

Used by the container's entrypoint, `make run` and the tests that start the real server.
"""

import gc
import json
import logging
import os
import pathlib
import sys
import tempfile

from gunicorn import glogging
from gunicorn import util as gunicorn_util

from payment_project.logconfig import JSON_FORMATTER, STDOUT_HANDLER, TRACE_FILTER

# Prometheus multiprocess mode: the client library reads this variable when it is first
# imported (by the preloaded app, below), so it is set here, before anything loads it.
# The pod sets it to an emptyDir; elsewhere each start gets a fresh temporary directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="payment-metrics-")
metrics_port = int(os.environ.get("METRICS_PORT", "9000"))
# The metrics server's address: HOST's unless set. In the pod gunicorn binds loopback
# (nginx in front) while Prometheus must reach the metrics from outside the pod.
metrics_host = os.environ.get("METRICS_HOST") or os.environ.get("HOST", "0.0.0.0")


def _drop_listening_without_address(record) -> bool:
    """With reuse_port the master holds no socket and would log "Listening at:  (<pid>)";
    when_ready below logs the configured address instead."""
    return not (record.msg == "Listening at: %s (%s)" and record.args and not record.args[0])


bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread keeps connections alive between Antaeus's sequential charges (the sync worker
# closes each one) and parks idle ones without holding a thread.
worker_class = "gthread"
# Import Django and the application once, in the master, before forking: the workers
# share those pages copy-on-write (lower PSS per worker) and start without importing.
# Nothing is opened in the master by the import: database connections, the outcome RNG
# and the body-read watchdog thread are all created lazily in the worker that uses them.
preload_app = True
# One thread per worker: a charge is CPU-bound Python, so more threads in a worker only
# take turns on its GIL, and SQLite serialises the writes anyway; 1 thread answered more
# charges per second than 4 (docs/performance.md). Stalled or trickling clients, which
# would hold a thread each, are absorbed by nginx in front of gunicorn in the pod
# (base/payment/nginx.conf, docs/reliability.md), not by more threads.
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# nginx's upstream keepalive_timeout (base/payment/nginx.conf) must stay below this, so it
# never sends a charge on a connection gunicorn is closing.
keepalive = 5
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new
# connections across them. On one shared socket the worker that wakes first accepts, and
# kept-alive connections stay where they landed: in make bench all 32 of wrk's
# connections sometimes sat on one of two workers, halving throughput
# (docs/performance.md).
reuse_port = True

# SIGTERM: stop accepting, finish the requests in flight, exit within graceful_timeout.
# Kubernetes' terminationGracePeriodSeconds must be longer (the manifests use 30 s).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))

# Read-only root filesystem: heartbeat files go to memory-backed /dev/shm where it exists
# (else the temp dir, /tmp in the pod), and the control socket, which would live under
# $HOME, is off.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
control_socket_disable = True

# Request-size limits: in the pod nginx decides them, tighter (4 KiB a line, 16 KiB a
# head: base/payment/nginx.conf), so gunicorn never refuses what nginx passed; these are
# gunicorn's maximums, the backstop where gunicorn runs alone (make run, docker run).
# The charge body limit is in the settings.
limit_request_line = 8190
limit_request_fields = 32768
limit_request_field_size = 8190

# X-Forwarded-* count only from nginx (the pod's loopback), which sets them itself from
# what it knows, and only the one scheme header nginx sets: a client's own copies never
# reach Django, and no pair of scheme headers can contradict each other.
forwarded_allow_ips = "127.0.0.1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}


def _json_write_error(sock, status_int, reason, mesg):
    """gunicorn's own refusals (a request it cannot parse: a control character in a
    header, say) in the service's error shape, not gunicorn's HTML page: Antaeus aborts
    its pay run on any answer that is not a JSON object with `result`."""
    body = json.dumps({
        "result": False,
        "error": "bad_request" if status_int == 400 else reason.lower().replace(" ", "_"),
        "reason": f"The request is not valid HTTP: {mesg}"[:300],
    }).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn has no setting for its error page; its workers call util.write_error for every
# refusal. That function is gunicorn's internal, not a documented API: the hostile-input
# table's `header-control-character` case (run through nginx by tests/reliability) fails
# if a gunicorn release stops calling it.
gunicorn_util.write_error = _json_write_error

# Logs: gunicorn's own lines as JSON on stdout, like the application's. The service logs
# one line per charge attempt itself; GUNICORN_ACCESS_LOG=true adds an access log line
# per request.
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "").lower() in ("1", "true", "yes") else None


class AccessLogWhenEnabled(glogging.Logger):
    """gunicorn's logger, building a request's access-log line only when it will be written.

    With a logconfig_dict gunicorn builds every request's log atoms (a dict from all the
    headers and environ) even though gunicorn.access, at WARNING, then drops the line
    (docs/performance.md). access() is the logger_class hook.
    """

    def access(self, resp, req, environ, request_time):
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


logger_class = AccessLogWhenEnabled
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": JSON_FORMATTER},
    "filters": {"trace": TRACE_FILTER, "listening": {"()": lambda: _drop_listening_without_address}},
    # gunicorn's own logger setup expects these two handler names.
    "handlers": {"console": STDOUT_HANDLER, "error_console": STDOUT_HANDLER},
    "loggers": {
        "gunicorn.error": {
            "level": loglevel.upper(),
            "handlers": ["error_console"],
            "filters": ["listening"],
            "propagate": False,
        },
        "gunicorn.access": {
            "level": "INFO" if accesslog else "WARNING",
            "handlers": ["console"],
            "propagate": False,
        },
    },
}


def on_starting(server):
    """Empty the metrics directory once per master start (not on a reload, which keeps
    the workers' counts): files left by an earlier run would be summed into this one's."""
    for path in pathlib.Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        path.unlink()


_metrics_server = None


def _worker_pids(server) -> list[int]:
    # The arbiter's table of live workers, read from the metrics thread while the main
    # thread may change it: copy, and retry the rare copy that races a change.
    for _ in range(5):
        try:
            return list(server.WORKERS)
        except RuntimeError:
            continue
    return []


def when_ready(server):
    """The master says where it serves (the configured bind: the workers open the
    sockets), then serves /metrics on its own port: the sum of every worker's files, plus
    the master's process metrics. Scraping never touches the charge port."""
    server.log.info("Listening at: %s", ", ".join(f"http://{address}" for address in server.cfg.bind))
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from payment_app.metrics import WorkerProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    ProcessCollector(registry=registry)
    registry.register(WorkerProcessCollector(lambda: _worker_pids(server)))
    global _metrics_server
    try:
        _metrics_server, _thread = start_http_server(metrics_port, addr=metrics_host, registry=registry)
    except OSError as exc:
        # Port 9000 is a common default of other software: one clear line, no traceback.
        # No worker is forked yet, so exiting here leaves nothing behind.
        server.log.error("cannot serve metrics on %s:%s (%s): METRICS_PORT is taken; set METRICS_PORT "
                         "to a free port", metrics_host, metrics_port, exc.strerror)
        sys.exit(1)
    server.log.info("Metrics listening at: http://%s:%s/metrics", metrics_host, metrics_port)


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (its counters and histograms stay summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork(server, worker):
    """A worker does not keep the master's metrics socket open: the port dies with the master."""
    if _metrics_server is not None:
        _metrics_server.socket.close()


def pre_fork(server, worker):
    """Freeze the master's objects before each fork: the workers' garbage collector then
    leaves them alone, so it does not write to (and un-share) the preloaded pages."""
    gc.freeze()


def post_worker_init(worker):
    """Each worker says what it bound (with reuse_port, each opens its own socket), then
    sets up its own metric values and tracer (tracing exports from a thread, which must be
    started after the fork)."""
    worker.log.info("Worker listening at: %s", ", ".join(str(sock) for sock in worker.sockets))
    from django.conf import settings

    from payment_app import metrics
    from payment_project import tracing

    metrics.worker_started(success_rate=settings.PAYMENT_SUCCESS_RATE)
    tracing.configure_worker()
