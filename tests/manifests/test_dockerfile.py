"""The Dockerfile, checked without a Docker engine: checkov's Dockerfile checks, its
HEALTHCHECK command run against the real server, and what it shares with the manifests."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.kube import REPO, find
from tests.manifests.test_checkov import checkov_path
from harness.server import Server

pytestmark = pytest.mark.manifests

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined; comments dropped."""
    logical, out = "", []
    for line in DOCKERFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        logical += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, args = logical.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            logical = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_checkov_dockerfile_checks_all_pass():
    run = subprocess.run(
        [checkov_path(), "--framework", "dockerfile", "--file", str(DOCKERFILE), "--output", "json",
         "--skip-download"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert run.returncode in (0, 1), run.stderr[-3000:]
    report = json.loads(run.stdout)
    failed = [(c["check_id"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 0
    assert failed == []


def test_base_images_are_pinned_and_identical():
    bases = [args.split()[0] for keyword, args in instructions() if keyword == "FROM"]
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    name, _, tag = bases[0].partition(":")
    assert name == "python" and tag.startswith("3.11.") and tag != "latest"


def test_every_copied_path_exists_and_is_in_the_build_context():
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for keyword, args in instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _destination = args.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_runtime_user_port_and_data_directory_match_the_manifests(env_objects):
    stage = final_stage()
    user = [args for keyword, args in stage if keyword == "USER"]
    env_lines = " ".join(args for keyword, args in stage if keyword == "ENV")
    image_env = dict(token.split("=", 1) for token in shlex.split(env_lines) if "=" in token)
    pod = find(env_objects, "Deployment", "payment", "payment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "payment"]
    assert user == [f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"]
    # The image alone serves $PORT (docker run) and its metrics; in the pod nginx takes
    # that port and payment-config moves gunicorn to a loopback port.
    assert [args for keyword, args in stage if keyword == "EXPOSE"] == [f"{image_env['PORT']} {image_env['METRICS_PORT']}"]
    ports = {port["name"]: str(port["containerPort"]) for port in container["ports"]}
    assert image_env["METRICS_PORT"] == ports["metrics"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    supplied = {item["name"] for item in container.get("env", [])}
    # Everything the service writes lives on a mounted volume: the root filesystem is
    # read-only. On PostgreSQL with the key from a Secret (production) it writes neither file.
    if "DATABASE_URL_FILE" not in supplied:
        assert os.path.dirname(image_env["DATABASE_PATH"]) in mounts
    if "DJANGO_SECRET_KEY" not in supplied:
        values = {item["name"]: item.get("value") for item in container.get("env", [])}
        key_file = values.get("DJANGO_SECRET_KEY_FILE") or image_env["DJANGO_SECRET_KEY_FILE"]
        assert os.path.dirname(key_file) in mounts
    assert "/tmp" in mounts
    multiproc = {e["name"]: e.get("value") for e in container.get("env", [])}["PROMETHEUS_MULTIPROC_DIR"]
    assert multiproc in mounts


@pytest.mark.server
def test_healthcheck_command_passes_on_a_live_server_and_fails_without_one(tmp_path):
    (healthcheck,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"
    server = Server(tmp_path).start()
    try:
        probe = [sys.executable, *command[1:]]
        env = {**os.environ, "PORT": str(server.port)}
        assert subprocess.run(probe, env=env, capture_output=True, timeout=10).returncode == 0
    finally:
        server.stop()
    assert subprocess.run(probe, env=env, capture_output=True, timeout=10).returncode != 0
