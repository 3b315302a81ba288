"""PostgreSQL for the tests and `make bench`: the machine's server for ordinary runs, and private
throw-away servers for the tests that stop, restart or cut off the database.

`PAYMENT_TEST_BACKEND=postgresql` runs the service suite on PostgreSQL
(`PAYMENT_TEST_POSTGRES_URL`, default the local server with trust authentication).
Every database a test run creates is named after the run's process and dropped at its end.
"""

from __future__ import annotations

import glob
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, field

import psycopg

from harness.ports import free_port

BACKEND = os.environ.get("PAYMENT_TEST_BACKEND", "sqlite")
ADMIN_URL = os.environ.get("PAYMENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = f"payment_test_{os.getpid()}_"
_counter = iter(range(1, 1_000_000))


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def unreachable_reason(url: str = ADMIN_URL) -> str | None:
    """None when the server answers; otherwise what a person needs to know to fix it."""
    try:
        with psycopg.connect(url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        where = urllib.parse.urlsplit(url)
        return (
            f"PostgreSQL is not reachable at {where.hostname}:{where.port or 5432} "
            f"({str(exc).strip().splitlines()[0]}). Start it (on Debian: pg_ctlcluster "
            "--skip-systemctl-redirect <version> main start) or point PAYMENT_TEST_POSTGRES_URL "
            "at a server where this user may create databases."
        )


def create_database(admin_url: str = ADMIN_URL, *, owner: str | None = None) -> str:
    """A new empty database for one test server; returns its URL (the admin's credentials)."""
    name = f"{PREFIX}{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
    return with_database(admin_url, name)


def drop_databases(admin_url: str = ADMIN_URL) -> None:
    """Drop every database this test run created (servers still connected are cut off)."""
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [PREFIX + "%"])]
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        pass


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (.ci/run does)")
    return found[-1]


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own, on a free loopback port, that the test may
    stop, restart and cut connections on without touching anyone else's server.

    Host connections need a password (scram-sha-256), as in a cluster; the superuser
    `postgres` connects over the local socket. Run as the `postgres` system user when
    the tests run as root (initdb refuses root).
    """

    root: pathlib.Path = field(default_factory=lambda: pathlib.Path(tempfile.mkdtemp(prefix="payment-pg-")))
    port: int = field(default_factory=free_port)
    user: str = "payment"
    password: str = "pw-Qx7-not-a-real-secret"

    @property
    def data(self) -> pathlib.Path:
        return self.root / "data"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {}
        if os.geteuid() == 0:
            kwargs["user"] = kwargs["group"] = "postgres"
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120, **kwargs)

    def init(self) -> "PrivatePostgres":
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "fsync = on\nmax_connections = 200\nlog_min_messages = warning\n"
            )
        self.start()
        self.sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.sql(f"CREATE DATABASE payment OWNER {self.user}")
        return self

    def start(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-m", "fast", "-w",
                  "-t", "60", "restart")

    def sql(self, statement: str, database: str = "postgres"):
        with psycopg.connect(host=str(self.root), port=self.port, user="postgres", dbname=database,
                             autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else None

    def url(self, database: str = "payment") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def terminate_backends(self, application_name: str = "payment") -> int:
        """Cut every connection the service holds, as a failover or a network fault would."""
        rows = self.sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{application_name}'"
        )
        return len(rows or [])

    def superuser_url(self, database: str = "payment") -> str:
        return f"postgresql://postgres@/{database}?host={urllib.parse.quote(str(self.root))}&port={self.port}"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def amcheck(url: str, table: str) -> str:
    """'ok' when every B-tree index of the table passes amcheck (the unique key's included).

    `url` must be a superuser's (the extension is created if missing)."""
    try:
        with connect(url) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            indexes = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                                   [table]).fetchall()
            for (index,) in indexes:
                conn.execute("SELECT bt_index_check(%s::regclass, true)", [index])
    except psycopg.Error as exc:
        return f"amcheck failed: {exc}"
    return "ok" if indexes else "no indexes"
