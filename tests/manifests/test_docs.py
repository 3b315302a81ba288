"""docs/deploy.md names paths, objects and commands that exist."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from tests.kube import REPO, find, render
from tests.manifests.conftest import secret_file

pytestmark = pytest.mark.manifests

DOC = REPO / "docs" / "deploy.md"
PATH_PATTERN = re.compile(
    r"(?<![\w/.-])((?:base|overlays|clusters|tenants|infrastructure|components|argocd|scripts|tests)/[\w./<>-]*[\w>/])"
)


def test_every_repository_path_in_the_deploy_guide_exists():
    text = DOC.read_text()
    paths = set(PATH_PATTERN.findall(text))
    assert len(paths) > 10
    for path in paths - {"clusters/staging/flux-system/"}:  # written by flux bootstrap
        if "<new>" in path:
            continue  # a folder the guide has you create, for an overlay of your own
        for env in ("staging", "production"):
            concrete = path.replace("<env>", env)
            assert (REPO / concrete).exists(), f"docs/deploy.md names {concrete}, which does not exist"


def test_the_guide_has_no_machine_paths():
    assert not re.search(r"/(work|home|root|Users)/", DOC.read_text())


def test_guide_yaml_snippets_parse_and_name_the_secrets_production_reads():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    for block in blocks:
        yaml.safe_load(textwrap.dedent(block))
    # The Secret the guide has you create is the one production's payment pods read.
    deployment = find(render("overlays/production/payment"), "Deployment", "payment", "payment")
    secret, key = secret_file(deployment, container_env_value(deployment, "DJANGO_SECRET_KEY_FILE"))
    assert f"create secret generic {secret}" in DOC.read_text()
    assert f"--from-literal={key}=" in DOC.read_text()


def container_env_value(workload: dict, name: str) -> str:
    [value] = [e["value"] for e in workload["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == name]
    return value


@pytest.mark.parametrize("layer", ["infrastructure/controllers", "infrastructure/auth"])
def test_the_guide_installs_the_chart_versions_flux_pins(layer):
    """The kubectl path (section 2) installs every chart Flux installs, at its version."""
    text = DOC.read_text()
    releases = [o for o in render(layer) if o["kind"] == "HelmRelease"]
    assert releases
    for release in releases:
        chart = release["spec"]["chart"]["spec"]
        assert re.search(
            rf"helm upgrade --install {release['spec']['releaseName']} {chart['chart']} .*\n?.*"
            rf"--version {re.escape(chart['version'])}\b", text), release["metadata"]["name"]


def test_the_documented_flux_bootstrap_path_is_a_cluster_folder():
    for path in re.findall(r"--path=(\S+)", DOC.read_text()):
        assert (REPO / path).is_dir() and path.startswith("clusters/")
