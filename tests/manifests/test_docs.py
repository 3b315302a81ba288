"""docs/deploy.md names paths, objects and commands that exist."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from tests.kube import REPO, find, render

pytestmark = pytest.mark.manifests

DOC = REPO / "docs" / "deploy.md"
PATH_PATTERN = re.compile(
    r"(?<![\w/.-])((?:base|overlays|clusters|argocd|infrastructure|components|scripts|tests)/[\w./<>-]*[\w>/])"
)


def test_every_repository_path_in_the_deploy_guide_exists():
    text = DOC.read_text()
    paths = set(PATH_PATTERN.findall(text))
    assert len(paths) > 10
    for path in paths - {"clusters/staging/flux-system/"}:  # written by flux bootstrap
        for env in ("staging", "production"):
            concrete = path.replace("<env>", env)
            assert (REPO / concrete).exists(), f"docs/deploy.md names {concrete}, which does not exist"


def test_the_guide_has_no_machine_paths():
    assert not re.search(r"/(work|home|root|Users)/", DOC.read_text())


def test_guide_yaml_snippets_parse_and_the_secret_patch_applies_to_the_real_deployment():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    parsed = [yaml.safe_load(textwrap.dedent(block)) for block in blocks]
    # The secret-file patch adds to the volumes and volumeMounts lists the base really has.
    deployment = find(render("overlays/production/payment"), "Deployment", "payment", "payment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"] and pod["containers"][0]["volumeMounts"]
    secret_patch = next(p for p in parsed if isinstance(p, dict) and "DJANGO_SECRET_KEY_FILE" in str(p))
    ops = yaml.safe_load(secret_patch["patches"][0]["patch"])
    assert [op["path"] for op in ops] == [
        "/spec/template/spec/volumes/-", "/spec/template/spec/containers/0/volumeMounts/-",
    ]


def test_the_documented_flux_bootstrap_path_is_a_cluster_folder():
    for path in re.findall(r"--path=(\S+)", DOC.read_text()):
        assert (REPO / path).is_dir() and path.startswith("clusters/")
