"""`manage.py check --deploy` with the environment each overlay gives the payment pod:
the image's ENV, the ConfigMap and the container's `env`, with the mounted Secret files
stood in for by files of the same kind. Every remaining warning is silenced in the
settings with its reason (docs/deploy.md, "Django's deployment checklist")."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys

import pytest

from tests.kube import REPO, find
from tests.manifests.conftest import containers

pytestmark = pytest.mark.manifests


def image_env() -> dict[str, str]:
    lines = (REPO / "Dockerfile").read_text().split("FROM ")[-1].replace("\\\n", " ").splitlines()
    tokens = [t for line in lines if line.startswith("ENV ") for t in shlex.split(line[4:])]
    return dict(token.split("=", 1) for token in tokens if "=" in token)


def pod_env(objects: list[dict]) -> dict[str, str]:
    deployment = find(objects, "Deployment", "payment", "payment")
    container = containers(deployment)[0]
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values |= find(objects, "ConfigMap", source["configMapRef"]["name"], "payment")["data"]
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: a Secret in the environment (mount it as a file)"
        values[item["name"]] = item["value"]
    return values


# What each mounted file holds in the cluster (made up here; the checks read only the key).
STAND_INS = {
    "DJANGO_SECRET_KEY_FILE": lambda: secrets.token_urlsafe(50),
    "DATABASE_URL_FILE": lambda: "postgresql://app:not-the-real-password@payment-db-rw.payment:5432/app",
    "PGSSLROOTCERT": lambda: "a CA certificate",
}


def run_check(environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
    )


def production_like(env_objects, tmp_path) -> dict[str, str]:
    """The pod's environment, its files (Secrets, the data volume) moved under tmp_path."""
    environment = {**image_env(), **pod_env(env_objects)}
    for name, content in STAND_INS.items():
        if name in environment:
            path = tmp_path / name.lower()
            path.write_text(content())
            environment[name] = str(path)
    environment |= {"DATABASE_PATH": str(tmp_path / "payment.sqlite3"), "STATIC_ROOT": str(tmp_path)}
    if "PROMETHEUS_MULTIPROC_DIR" in environment:  # an emptyDir in the pod
        (tmp_path / "metrics").mkdir()
        environment["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **environment}


def test_the_deployed_settings_pass_the_deployment_checklist(env_objects, tmp_path):
    environment = production_like(env_objects, tmp_path)
    run = run_check(environment)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "System check identified no issues" in run.stdout, run.stdout
    # No secret of the pod is an environment value (the URL and key are files).
    assert "DATABASE_URL" not in environment and "DJANGO_SECRET_KEY" not in environment


def test_the_check_fails_on_what_it_guards(env_objects, tmp_path):
    """Not a check that cannot fail: insecure cookies in the same environment are reported."""
    environment = production_like(env_objects, tmp_path) | {"DJANGO_SECURE_COOKIES": "false"}
    run = run_check(environment)
    assert run.returncode != 0
    assert "security.W010" in run.stdout + run.stderr


def test_cookies_are_secure_short_lived_and_csrf_protected(settings):
    """What the silenced W003 would hide (it cannot see the CSRF middleware subclass)."""
    assert settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE
    assert settings.SESSION_COOKIE_HTTPONLY and settings.CSRF_COOKIE_HTTPONLY
    assert settings.SESSION_COOKIE_AGE <= 8 * 3600
    from django.middleware.csrf import CsrfViewMiddleware
    from django.utils.module_loading import import_string

    assert any(issubclass(import_string(m), CsrfViewMiddleware) for m in settings.MIDDLEWARE)
