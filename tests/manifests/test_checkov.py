"""checkov (--framework kustomize, its own virtualenv) on every environment overlay.

overlays/<env> holds every object of its platform, antaeus and payment overlays, identical
to what Flux applies from each (test_render.py checks it), so scanning the two environment
overlays covers every overlay; scanning a service overlay alone would also miss the
NetworkPolicies of the platform layer that select its pods (CKV2_K8S_6).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
import yaml

from tests.kube import REPO
from tests.manifests.conftest import ENVIRONMENTS, SERVICES

pytestmark = pytest.mark.manifests

SKIPS_FILE = pathlib.Path(__file__).with_name("checkov-skips.yaml")


def checkov_path() -> str:
    path = os.environ.get("CHECKOV") or str(REPO / ".venv-checkov" / "bin" / "checkov")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"checkov not found at {path}: run `make test` (it creates .venv-checkov), "
            "or set CHECKOV to a checkov executable",
            pytrace=False,
        )
    return path


def skips() -> list[dict]:
    entries = yaml.safe_load(SKIPS_FILE.read_text())["skips"]
    for entry in entries:
        assert set(entry) == {"check", "resource", "reason"}, entry
        assert len(entry["reason"].split()) >= 8, f"{entry['check']}: give a real reason"
    return entries


def run_checkov(env: str) -> dict[str, list[tuple[str, str]]]:
    """{"passed"|"failed": [(check_id, Kind.namespace.name)]} for overlays/<env>.

    One checkov run per overlay: given several, checkov 3.3 writes the builds of overlays
    it cannot relate to a base into the same scratch files, and results get lost.
    """
    command = [
        checkov_path(), "--framework", "kustomize", "--output", "json", "--skip-download",
        "--file", f"overlays/{env}/kustomization.yaml",
    ]
    run = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert run.returncode in (0, 1), f"checkov crashed ({run.returncode}):\n{run.stderr[-3000:]}"
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert [r["check_type"] for r in reports] == ["kustomize"], run.stderr[-2000:]
    report = reports[0]
    assert report["summary"]["parsing_errors"] == 0
    out: dict[str, list[tuple[str, str]]] = {"passed": [], "failed": []}
    for outcome in out:
        for result in report["results"][f"{outcome}_checks"]:
            assert result["file_path"].lstrip("/").startswith(f"overlays/{env}/"), result
            # "overlay:<name>:Kind.namespace.name" -> "Kind.namespace.name"
            out[outcome].append((result["check_id"], result["resource"].split(":")[-1]))
    return out


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, list[tuple[str, str]]]]:
    return {env: run_checkov(env) for env in ENVIRONMENTS}


def test_checkov_scanned_both_services_in_every_environment(results):
    # checkov silently skips an overlay it cannot build: make sure each one was scanned.
    for env in ENVIRONMENTS:
        scanned = {resource for _, resource in results[env]["passed"] + results[env]["failed"]}
        for service in SERVICES:
            assert f"Deployment.{service}.{service}" in scanned, f"{env}: {service} not scanned"


def test_no_failed_check_outside_the_skip_list(results):
    allowed = {(s["check"], s["resource"]) for s in skips()}
    unexpected = sorted(
        f"{env}: {check} {resource}"
        for env in ENVIRONMENTS
        for check, resource in results[env]["failed"]
        if (check, resource) not in allowed
    )
    assert not unexpected, "checkov failures not in checkov-skips.yaml:\n" + "\n".join(unexpected)


def test_every_skip_is_still_needed(results):
    failed = {f for env in ENVIRONMENTS for f in results[env]["failed"]}
    stale = [s for s in skips() if (s["check"], s["resource"]) not in failed]
    assert not stale, f"skips that match no failure any more: {stale}"


def test_payment_needs_almost_nothing_skipped():
    payment = {s["check"] for s in skips() if s["resource"].split(".")[1] == "payment"}
    # Only the image digest (every Secret is a mounted file, the database URL too).
    assert payment == {"CKV_K8S_43"}, payment
