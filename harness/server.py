"""Run the real service as the container does (scripts/entrypoint -> migrate -> gunicorn)
on a loopback port, and talk raw HTTP/1.1 to it.

Shared by the server tests, the stress tests and the benchmark (hence outside tests/).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field

from harness import postgres
from harness.cpu_limit import CpuLimit
from harness.ports import free_port

REPO = pathlib.Path(__file__).resolve().parent.parent
# The container's entrypoint, relative to the checkout (Server.tree) it runs from.
ENTRYPOINT = pathlib.Path("scripts", "entrypoint")
# The nginx config the pod runs in front of gunicorn (base/payment/deployment.yaml).
NGINX_CONF = REPO / "base" / "payment" / "nginx.conf"

ANTAEUS_BODY = b'{"currency":{},"customer_id":1,"value":301.99}'
ANTAEUS_HOST = "payment.payment.svc.cluster.local:8000"
# The same names the Kubernetes config allows (base/payment): every in-cluster name of the Service.
CLUSTER_ALLOWED_HOSTS = "payment.payment.svc.cluster.local,payment.payment.svc,payment.payment,payment,localhost"


def antaeus_request(body: bytes = ANTAEUS_BODY, *, path: str = "/api/v1/charges", host: str = ANTAEUS_HOST,
                    extra_headers: dict[str, str] | None = None) -> bytes:
    """The request stock Antaeus's khttp client sends (../shared/antaeus-contract.md)."""
    headers = {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "User-Agent": "khttp/1.0.0-SNAPSHOT",
        "Content-Type": "application/json",
        "Host": host,
        "Connection": "keep-alive",
        "Content-Length": str(len(body)),
        **(extra_headers or {}),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def read_reply(sock: socket.socket, method: str = "POST") -> Reply:
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    body = response.read()
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def send_raw(port: int, raw: bytes, *, timeout: float = 30.0, method: str = "POST") -> Reply:
    """Send bytes exactly as given on a new connection and read one HTTP response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_reply(sock, method)


@dataclass
class Server:
    """The payment service under gunicorn, started through the container's entrypoint."""

    data_dir: pathlib.Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # What the entrypoint execs after migrating; empty is its default (gunicorn serving the service).
    command: tuple[str, ...] = ()
    # As the pod runs it: nginx (base/payment/nginx.conf) on `port`, gunicorn behind it on
    # `app_port`, and nginx's loopback listener for the admin and the API docs on `admin_port`.
    proxy: bool = False
    app_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    nginx: subprocess.Popen | None = None
    started_at: float = 0.0
    # PostgreSQL: the server's own database, created at the first start when the run's
    # backend is PostgreSQL (or given); None: SQLite at `database`.
    database_url: str | None = None
    # CPU limits (CFS quotas, in CPUs) on gunicorn and nginx, as the kubelet enforces the
    # containers' limits.cpu; None: unlimited. The benchmark's --pod-limits.
    cpu_limit: float | None = None
    nginx_cpu_limit: float | None = None
    limits: dict[str, CpuLimit] = field(default_factory=dict)
    # The checkout whose entrypoint and code run: this one, or another commit's (the
    # benchmark's --compare), with this checkout's Python environment.
    tree: pathlib.Path = REPO

    @property
    def gunicorn_port(self) -> int:
        return self.app_port if self.proxy else self.port

    @property
    def database(self) -> pathlib.Path:
        return self.data_dir / "payment.sqlite3"

    @property
    def log_path(self) -> pathlib.Path:
        return self.data_dir / "server.log"

    def environment(self) -> dict[str, str]:
        venv_bin = str(pathlib.Path(sys.executable).parent)
        return {
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.data_dir),
            "HOST": "127.0.0.1",
            "PORT": str(self.gunicorn_port),
            "METRICS_PORT": str(self.metrics_port),
            "PROMETHEUS_MULTIPROC_DIR": str(self.data_dir / "metrics"),
            "DATABASE_PATH": str(self.database),
            **({"DATABASE_URL": self.database_url} if self.database_url else {}),
            "DJANGO_SECRET_KEY_FILE": str(self.data_dir / "secret_key"),
            "DJANGO_ALLOWED_HOSTS": CLUSTER_ALLOWED_HOSTS,
            "STATIC_ROOT": str(self.data_dir / "static"),
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "INFO",
            **self.env,
        }

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> "Server":
        self._ensure_database()
        (self.data_dir / "static").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "metrics").mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        for name, cpus in (("gunicorn", self.cpu_limit), ("nginx", self.nginx_cpu_limit)):
            if cpus is not None and name not in self.limits:
                self.limits[name] = CpuLimit(cpus).create()
        if self.proxy and self.nginx is None:
            self.nginx = start_nginx(self.data_dir, listen=self.port, upstream=self.app_port, admin=self.admin_port,
                                     limit=self.limits.get("nginx"), conf=self.tree / NGINX_CONF.relative_to(REPO))
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(self.tree / ENTRYPOINT), *self.command],
            cwd=self.tree,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches master and workers
            preexec_fn=self.limits["gunicorn"].join if "gunicorn" in self.limits else None,
        )
        log.close()
        if wait:
            self.wait_ready(timeout)
            self.wait_workers(timeout)
        return self

    def run(self, *command: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command through the entrypoint (key file, migrations, admin user first)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_database()
        return subprocess.run(
            [str(self.tree / ENTRYPOINT), *command],
            cwd=self.tree,
            env={**self.environment(), **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def get(self, path: str, *, host: str = "localhost", timeout: float = 5.0) -> Reply:
        raw = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        return send_raw(self.port, raw.encode(), timeout=timeout, method="GET")

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll /readyz until it answers 200; returns seconds since start()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz", timeout=2).status == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def wait_workers(self, timeout: float = 60.0) -> set[int]:
        """Wait until every worker (WEB_CONCURRENCY) listens on its own socket.

        /readyz answers as soon as one worker is up; with reuse_port each worker binds its
        socket after the fork, so the others may still be starting. Tests that compare
        worker PIDs or count sockets wait for all of them.
        """
        expected = int(self.environment()["WEB_CONCURRENCY"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(listening := self.listening_workers()) == expected:
                return listening
            time.sleep(0.05)
        raise TimeoutError(f"{expected} workers not listening after {timeout}s:\n{self.log()}")

    def listening_workers(self) -> set[int]:
        """Workers that hold a socket listening on the port."""
        listening = {inode for inode, state in tcp_sockets(self.gunicorn_port).items() if state == TCP_LISTEN}
        return {pid for pid in self.workers() if socket_inodes(pid) & listening}

    def metrics(self, *, timeout: float = 5.0) -> str:
        """The Prometheus text exposition served on the metrics port."""
        raw = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        reply = send_raw(self.metrics_port, raw, timeout=timeout, method="GET")
        assert reply.status == 200, reply
        return reply.body.decode()

    def charge(self, body: bytes = ANTAEUS_BODY, **kwargs) -> Reply:
        return send_raw(self.port, antaeus_request(body, **kwargs))

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM gunicorn and wait for it; nginx, if any, stays for a restart (close())."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                self.signal(signal.SIGTERM)
                self.process.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        return self.process.returncode

    def close(self) -> None:
        """Stop gunicorn, then nginx, and remove their CPU limits."""
        self.stop()
        if self.nginx is not None:
            stop_nginx(self.nginx)
            self.nginx = None
        for limit in self.limits.values():
            limit.remove()
        self.limits.clear()

    def kill(self) -> None:
        """SIGKILL the master and every worker at once, as an OOM kill or node loss would."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        """The log's JSON lines (gunicorn's and the application's), parsed."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def workers(self) -> set[int]:
        """PIDs of the gunicorn workers (children of the master, which the entrypoint exec'd)."""
        assert self.process is not None
        path = pathlib.Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in path.read_text().split()}

    def _ensure_database(self) -> None:
        if self.database_url is None and postgres.BACKEND == "postgresql":
            self.database_url = postgres.create_database()

    def db(self) -> "sqlite3.Connection | psycopg.Connection":
        """A connection to the server's database; `with server.db() as db` closes it.

        Both drivers take `db.execute(sql, params).fetchone()`; write placeholders as %s.
        """
        if self.database_url:
            return postgres.connect(self.database_url)
        # Autocommit, like the PostgreSQL connection: a write is there once execute returns.
        return contextlib.closing(_SqliteQmark(sqlite3.connect(self.database, timeout=30, isolation_level=None)))

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.db() as db:
            return list(db.execute(sql, params).fetchall())


class _SqliteQmark:
    """sqlite3 with psycopg's %s placeholders, so one SQL text serves both backends."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params: tuple = ()):
        return self._conn.execute(sql.replace("%s", "?"), params)

    def close(self) -> None:
        self._conn.close()


def nginx_executable() -> str:
    """nginx from PATH or Debian's /usr/sbin; a clear error if it is missing."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not found:
        raise FileNotFoundError("nginx is not installed: `apt-get install nginx-light` (.ci/run installs it)")
    return found


def nginx_config(data_dir: pathlib.Path, *, listen: int, upstream: int, admin: int | None = None,
                 conf: pathlib.Path = NGINX_CONF) -> str:
    """The pod's nginx.conf with loopback ports and its /tmp paths moved under data_dir
    (pod_path() maps a path the manifests name the same way)."""
    text = conf.read_text()
    for old, new in (("listen 8000;", f"listen 127.0.0.1:{listen};"),
                     ("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{admin or free_port()};"),
                     ("server 127.0.0.1:8001;", f"server 127.0.0.1:{upstream};"),
                     (" /tmp/", f" {data_dir}/")):
        if old not in text:
            raise ValueError(f"{conf} no longer holds {old!r}: update harness/server.py")
        text = text.replace(old, new)
    if os.geteuid() == 0:
        # Run as root, nginx would switch its workers to `nobody`, who cannot read the
        # test's private directories (the drain file); in the pod nginx runs as one
        # non-root user throughout.
        text = "user root;\n" + text
    return text


def pod_path(data_dir: pathlib.Path, text: str) -> str:
    """A command or path from the proxy container (its /tmp) as the local nginx sees it."""
    return text.replace("/tmp/", f"{data_dir}/")


def start_nginx(data_dir: pathlib.Path, *, listen: int, upstream: int, admin: int | None = None,
                timeout: float = 10.0, limit: CpuLimit | None = None,
                conf: pathlib.Path = NGINX_CONF) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "nginx.conf"
    config.write_text(nginx_config(data_dir, listen=listen, upstream=upstream, admin=admin, conf=conf))
    log = (data_dir / "nginx.log").open("ab")
    process = subprocess.Popen(
        [nginx_executable(), "-g", "daemon off;", "-p", str(data_dir), "-e", "stderr", "-c", str(config)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit.join if limit else None,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while not any(state == TCP_LISTEN for state in tcp_sockets(listen).values()):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_nginx(process)
            raise RuntimeError(f"nginx did not start:\n{(data_dir / 'nginx.log').read_text(errors='replace')}")
        time.sleep(0.02)
    return process


def stop_nginx(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGQUIT)  # graceful, as the image's STOPSIGNAL
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


TCP_LISTEN, TCP_ESTABLISHED = "0A", "01"  # states as /proc/net/tcp writes them


def tcp_sockets(port: int) -> dict[int, str]:
    """Socket inode -> TCP state of the IPv4 sockets whose local port is `port`."""
    sockets = {}
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            sockets[int(fields[9])] = fields[3]
    return sockets


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds open (empty once it is gone)."""
    inodes = set()
    try:
        descriptors = list(pathlib.Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in descriptors:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes
