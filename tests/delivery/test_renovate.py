"""Renovate's configuration (.github/renovate.json5): valid by Renovate's own validator
(npm `renovate`, strict: warnings and needed migrations fail too), and each kind of pin
in the tree is in a file one of its managers reads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.kube import REPO

CONFIG = REPO / ".github" / "renovate.json5"
NPM = REPO / "tests" / "delivery" / "npm"
MANAGERS = NPM / "node_modules" / "renovate" / "dist" / "modules" / "manager"

# A file holding each kind of pin, and the Renovate manager that keeps it current.
PINS = {
    "pyproject.toml": "pep621",  # direct Python pins
    "requirements/run.txt": "pip-compile",  # the hash-checked locks
    "requirements/test.txt": "pip-compile",
    "requirements/checkov.txt": "pip-compile",
    "requirements/uv.txt": "pip-compile",
    "requirements/checkov.in": "pip_requirements",
    "Dockerfile": "dockerfile",  # base images
    "overlays/production/antaeus/kustomization.yaml": "kustomize",  # manifest image tags
    "overlays/staging/antaeus/kustomization.yaml": "kustomize",
    "base/payment/deployment.yaml": "kubernetes",  # the nginx sidecar's tag
    "infrastructure/controllers/cloudnative-pg.yaml": "flux",  # HelmRelease chart versions
    "argocd/staging/application-cloudnative-pg.yaml": "argocd",  # Argo CD chart versions
    "argocd/production/application-cloudnative-pg.yaml": "argocd",
    ".github/workflows/release.yml": "github-actions",
    "tests/manifests/crd-models/package.json": "npm",  # the npm test models
    "tests/delivery/npm/package.json": "npm",
}


def node(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    path = shutil.which("node")
    if path is None or not (NPM / "node_modules").is_dir():
        pytest.fail("Renovate's validator runs on Node.js from tests/delivery/npm: run `make test` "
                    "(or `make tests/delivery/npm/.installed`).", pytrace=False)
    return subprocess.run([path, *args], cwd=NPM, input=stdin, capture_output=True, text=True, timeout=300, check=False)


def validate(path) -> subprocess.CompletedProcess:
    return node("node_modules/renovate/dist/config-validator.js", "--strict", "--no-global", str(path))


def config() -> dict:
    run = node("-e", "process.stdout.write(JSON.stringify(require('json5').parse(require('fs').readFileSync(0, 'utf8'))))",
               stdin=CONFIG.read_text())
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_renovate_validator_accepts_the_config():
    run = validate(CONFIG)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "Config validated successfully" in run.stdout + run.stderr


def test_renovate_validator_rejects_an_outdated_or_wrong_config(tmp_path):
    text = CONFIG.read_text()
    for name, spoiled in {
        "unknown option": text.replace("timezone:", "timezoen:"),
        "needs a migration": text.replace('kubernetes: { managerFilePatterns:', 'kubernetes: { fileMatch:'),
    }.items():
        path = tmp_path / "renovate.json5"
        path.write_text(spoiled)
        assert spoiled != text and validate(path).returncode != 0, name


def patterns(manager: str, settings: dict) -> list[re.Pattern]:
    """The manager's file patterns: this config's, else Renovate's defaults."""
    configured = settings.get(manager, {}).get("managerFilePatterns")
    if configured is None:
        source = (MANAGERS / manager / "index.js").read_text()
        listed = re.search(r'managerFilePatterns: \[((?:\s*"(?:[^"\\]|\\.)*",?)*)\s*\]', source)[1]
        configured = [json.loads(literal) for literal in re.findall(r'"(?:[^"\\]|\\.)*"', listed)]
    return [re.compile(p[1:-1]) for p in configured]


def test_every_kind_of_pin_is_read_by_a_manager():
    settings = config()
    for path, manager in PINS.items():
        assert (REPO / path).exists(), path
        assert any(p.search(path) for p in patterns(manager, settings)), (path, manager)
    # The locks are never mistaken for plain requirements files (Renovate would edit
    # one pin and leave the hashes stale).
    assert not any(p.search("requirements/run.txt") for p in patterns("pip_requirements", settings))


def test_the_ci_container_image_is_found_by_the_custom_manager():
    (manager,) = config()["customManagers"]
    ci = (REPO / ".github/workflows/ci.yml").read_text()
    files = [p for p in patterns_of(manager) if p.search(".github/workflows/ci.yml")]
    assert files
    (javascript,) = manager["matchStrings"]
    pattern = javascript.replace("(?<", "(?P<")  # the same named groups in Python's spelling
    found = [m.groupdict() for m in re.finditer(pattern, ci)]
    assert found == [{"depName": "python", "currentValue": "3.11.14-bookworm", "currentDigest": None,
                      "datasource": "docker"}], found
    pinned = ci.replace("3.11.14-bookworm #", "3.11.14-bookworm@sha256:" + "0" * 64 + " #")
    assert [m["currentDigest"] for m in re.finditer(pattern, pinned)] == ["sha256:" + "0" * 64]


def patterns_of(manager: dict) -> list[re.Pattern]:
    return [re.compile(p[1:-1]) for p in manager["managerFilePatterns"]]


def test_own_image_is_left_to_image_automation_and_production_waits_for_staging():
    rules = config()["packageRules"]
    own = next(r for r in rules if r.get("enabled") is False)
    assert any(re.search(p.strip("/"), "registry.example.com/antaeus-billing/payment") for p in own["matchPackageNames"])
    production = next(r for r in rules if "**/production/**" in r.get("matchFileNames", []))
    assert production["minimumReleaseAge"] == "7 days"
    assert any("**/staging/**" in r.get("matchFileNames", []) and "minimumReleaseAge" not in r for r in rules)
