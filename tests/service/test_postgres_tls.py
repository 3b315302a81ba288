"""The production connection to PostgreSQL, as components/postgres sets it up: the URL read
from a mounted file (DATABASE_URL_FILE, CloudNativePG's `uri` key), TLS with the server's
certificate verified against the cluster's CA and name (PGSSLMODE=verify-full,
PGSSLROOTCERT). The server here is a private PostgreSQL with a certificate made the way
the operator makes it: its own CA, the -rw Service's names as subject alternative names.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import subprocess

import pytest

from harness import postgres
from harness.server import Server

pytestmark = [pytest.mark.server, pytest.mark.postgresql]

# CloudNativePG's server certificate names the -rw Service as <cluster>-rw, -rw.<ns> and
# -rw.<ns>.svc; its `uri` key uses the second.
CLUSTER_NAMES = ("payment-db-rw", "payment-db-rw.payment", "payment-db-rw.payment.svc")


def openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: pathlib.Path, name: str) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)
    return directory


def make_server_cert(ca: pathlib.Path, directory: pathlib.Path, names: tuple[str, ...]) -> None:
    san = ",".join(f"DNS:{n}" for n in names)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", "server.key",
            "-out", "server.csr", cwd=directory)
    (directory / "ext.cnf").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca / "ca.crt"), "-CAkey", str(ca / "ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=directory)


@pytest.fixture(scope="module")
def tls_pg(tmp_path_factory):
    pg = postgres.PrivatePostgres().init()
    try:
        ca = make_ca(tmp_path_factory.mktemp("cluster-ca"), "payment-db CA")
        make_server_cert(ca, pg.data, CLUSTER_NAMES)
        if os.geteuid() == 0:  # the server runs as `postgres` and refuses a key others can read
            owner = pwd.getpwnam("postgres")
            for name in ("server.key", "server.crt"):
                os.chown(pg.data / name, owner.pw_uid, owner.pw_gid)
        os.chmod(pg.data / "server.key", 0o600)
        with open(pg.data / "postgresql.conf", "a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        pg.restart()
        yield pg, ca / "ca.crt"
    finally:
        pg.destroy()


def uri(pg: postgres.PrivatePostgres, host: str = "payment-db-rw.payment") -> str:
    """The operator's `uri` key for a cluster reached at `host`; hostaddr stands in for the
    cluster's DNS (libpq connects there and still checks the certificate against `host`)."""
    return f"postgresql://{pg.user}:{pg.password}@{host}:{pg.port}/payment?hostaddr=127.0.0.1"


def production_env(tmp_path: pathlib.Path, url: str, ca_file: pathlib.Path) -> dict[str, str]:
    secret = tmp_path / "payment-db"
    secret.mkdir(exist_ok=True)
    (secret / "uri").write_text(url)  # a Secret key: no trailing newline
    return {"DATABASE_URL_FILE": str(secret / "uri"), "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(ca_file)}


def test_the_service_connects_over_verified_tls_with_the_url_from_a_file(tls_pg, tmp_path):
    pg, ca_file = tls_pg
    srv = Server(tmp_path / "server", env=production_env(tmp_path, uri(pg), ca_file))
    srv.start()
    try:
        assert srv.charge().status == 201
        # Every connection of the service is TLS.
        rows = pg.sql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                      "WHERE a.application_name = 'payment'")
        assert rows and all(ssl for (ssl,) in rows), rows
        # The password is in no process environment (what `ps eww` and /proc/*/environ show).
        for pid in (srv.process.pid, *srv.workers()):
            environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
            assert pg.password.encode() not in environ
            assert b"DATABASE_URL_FILE=" in environ
        assert pg.password not in srv.log()
    finally:
        srv.stop()


@pytest.mark.parametrize("case", ["another CA", "a name the certificate does not carry"])
def test_a_server_that_cannot_prove_it_is_the_cluster_is_refused(tls_pg, tmp_path, case):
    pg, ca_file = tls_pg
    if case == "another CA":
        url, trusted = uri(pg), make_ca(tmp_path / "other-ca", "someone else") / "ca.crt"
        expected = "certificate verify failed"
    else:
        url, trusted = uri(pg, host="payment-db-r.elsewhere"), ca_file
        expected = "does not match host name"
    srv = Server(tmp_path / "server", env=production_env(tmp_path, url, trusted))
    migrated = srv.run("true")  # the entrypoint migrates first: its first connection
    assert migrated.returncode != 0
    assert expected in migrated.stderr, migrated.stderr[-2000:]
    assert pg.password not in migrated.stdout + migrated.stderr


def test_an_unreadable_url_file_is_a_clear_configuration_error(tmp_path):
    srv = Server(tmp_path, env={"DATABASE_URL_FILE": str(tmp_path / "missing" / "uri")})
    run = srv.run("true")
    assert run.returncode != 0
    assert f"DATABASE_URL_FILE={tmp_path / 'missing' / 'uri'} cannot be read (No such file or directory)" in run.stderr


def test_database_url_from_the_environment_still_works_for_local_use(tls_pg, tmp_path):
    pg, ca_file = tls_pg
    srv = Server(tmp_path / "server", database_url=uri(pg).replace("payment-db-rw.payment", "127.0.0.1"),
                 env={"PGSSLMODE": "require"})
    srv.start()
    try:
        assert srv.charge().status == 201
    finally:
        srv.stop()
