"""gunicorn settings for the payment service, read from the environment.

Used by the container's entrypoint, `make run` and the tests that start the real server.
"""

import gc
import os
import tempfile

from payment_project.logconfig import JSON_FORMATTER, STDOUT_HANDLER


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

# Request-size limits in front of Django (the charge body limit is in the settings).
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# Logs: gunicorn's own lines as JSON on stdout, like the application's. The service logs
# one line per charge attempt itself; GUNICORN_ACCESS_LOG=true adds an access log line
# per request.
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "").lower() in ("1", "true", "yes") else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": JSON_FORMATTER},
    "filters": {"listening": {"()": lambda: _drop_listening_without_address}},
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


def pre_fork(server, worker):
    """Freeze the master's objects before each fork: the workers' garbage collector then
    leaves them alone, so it does not write to (and un-share) the preloaded pages."""
    gc.freeze()


def when_ready(server):
    """The master says where it serves: the configured bind (the workers open the sockets)."""
    server.log.info("Listening at: %s", ", ".join(f"http://{address}" for address in server.cfg.bind))


def post_worker_init(worker):
    """Each worker says what it bound (with reuse_port, each opens its own socket)."""
    worker.log.info("Worker listening at: %s", ", ".join(str(sock) for sock in worker.sockets))
