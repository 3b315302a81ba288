"""Staging follows new payment releases by itself, production only by pull request:
Flux image automation (clusters/staging/image-automation.yaml) writes through the setter
markers in the staging overlay only; production pins an exact version (and digest, once
scripts/promote wrote one); Flux reports each cluster's Kustomizations as commit
statuses the promotion workflow reads. Every new custom resource is checked by the npm
Flux models (crd-models), unknown fields included."""

from __future__ import annotations

import copy
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.kube import REPO, render
from tests.manifests.conftest import is_built_in, load_yaml_documents
from tests.manifests.test_custom_resources import NPM_VALIDATED, check

pytestmark = pytest.mark.manifests

AUTOMATION = REPO / "clusters/staging/image-automation.yaml"
NOTIFICATIONS = {env: REPO / f"clusters/{env}/notifications.yaml" for env in ("staging", "production")}
STAGING_PAYMENT = REPO / "overlays/staging/payment/kustomization.yaml"
PRODUCTION = ("overlays/production", "overlays/production/payment", "overlays/production/payment-database")
MARKER = re.compile(r'#\s*\{"\$imagepolicy":\s*"(?P<ns>[^:"]+):(?P<name>[^:"]+)(?::(?P<field>tag|name|digest))?"\}')


def objects(path) -> dict[str, dict]:
    return {o["kind"]: o for o in load_yaml_documents(path)}


def new_custom_resources() -> list[dict]:
    return [o for path in [AUTOMATION, *NOTIFICATIONS.values()] for o in load_yaml_documents(path)]


def test_new_custom_resources_match_the_flux_models():
    found = new_custom_resources()
    assert {(o["apiVersion"], o["kind"]) for o in found} <= NPM_VALIDATED
    results = check(found)
    assert all(r["model"] for r in results), results
    assert [(r["kind"], r["name"], r["errors"]) for r in results if r["errors"]] == []


def test_cloudcoil_agrees_where_its_flux_models_reach():
    """cloudcoil-models-fluxcd 2.5.1.0 (its last release for Python 3.11) models the
    notification kinds at v1beta3 but not Provider.commitStatusExpr (Flux 2.6), and the
    image kinds only at v1beta2, which Flux 2.7's CRDs no longer serve: so the npm models
    check them whole. Where cloudcoil reaches, it agrees; this fails once it knows more."""
    import pydantic
    from cloudcoil.models.fluxcd import image
    from cloudcoil.models.fluxcd.notification.v1beta3 import Alert, Provider

    for path in NOTIFICATIONS.values():
        found = objects(path)
        Alert.model_validate(found["Alert"], extra="forbid", strict=True)
        with pytest.raises(pydantic.ValidationError) as rejected:
            Provider.model_validate(found["Provider"], extra="forbid", strict=True)
        assert [e["loc"] for e in rejected.value.errors()] == [("spec", "commitStatusExpr")]
        without = copy.deepcopy(found["Provider"])
        del without["spec"]["commitStatusExpr"]
        Provider.model_validate(without, extra="forbid", strict=True)
    assert not hasattr(image, "v1") and not (pathlib.Path(image.__file__).parent / "v1.py").exists()


def test_the_models_reject_misspelt_and_mistyped_fields():
    automation = objects(AUTOMATION)
    policy, update = automation["ImagePolicy"], automation["ImageUpdateAutomation"]
    provider = objects(NOTIFICATIONS["staging"])["Provider"]
    misspelt = copy.deepcopy(policy)
    misspelt["spec"]["policy"]["semVer"] = misspelt["spec"]["policy"].pop("semver")
    bad_strategy = copy.deepcopy(update)
    bad_strategy["spec"]["update"]["strategy"] = "Setter"
    bad_type = copy.deepcopy(provider)
    bad_type["spec"]["type"] = "githubb"
    errors = [r["errors"] for r in check([misspelt, bad_strategy, bad_type])]
    assert any('"semVer"' in e for e in errors[0]), errors[0]
    assert any("/spec/update/strategy" in e for e in errors[1]), errors[1]
    assert any("/spec/type" in e for e in errors[2]), errors[2]


def test_staging_carries_the_markers_of_an_existing_policy_and_production_none():
    automation = objects(AUTOMATION)
    policy = automation["ImagePolicy"]["metadata"]
    markers = [m.groupdict() for m in MARKER.finditer(STAGING_PAYMENT.read_text())]
    assert {m["field"] for m in markers} == {"name", "tag"}, markers
    assert all((m["ns"], m["name"]) == (policy["namespace"], policy["name"]) for m in markers)
    for path in REPO.glob("overlays/production/**/*.yaml"):
        assert "$imagepolicy" not in path.read_text(), path
    # The automation writes only below the staging overlay, into the repository Flux applies.
    spec = automation["ImageUpdateAutomation"]["spec"]
    assert spec["update"] == {"path": "./overlays/staging", "strategy": "Setters"}
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": "flux-system"}
    assert spec["git"]["push"]["branch"] == spec["git"]["checkout"]["ref"]["branch"] == "main"


def test_the_marked_lines_hold_what_the_setters_would_write():
    """Each marker sits on the value it sets: newName the scanned image, newTag a tag
    the policy admits, the version label the same tag."""
    automation = objects(AUTOMATION)
    image = automation["ImageRepository"]["spec"]["image"]
    policy = automation["ImagePolicy"]["spec"]
    values = {}
    for line in STAGING_PAYMENT.read_text().splitlines():
        if marker := MARKER.search(line):
            key, _, value = line[:marker.start()].strip().partition(": ")
            values.setdefault(marker["field"], set()).add((key, value.strip('"')))
    assert values["name"] == {("newName", image)}
    tags = {value for _, value in values["tag"]}
    assert {key for key, _ in values["tag"]} == {"newTag", "app.kubernetes.io/version"} and len(tags) == 1
    tag = tags.pop()
    pattern = re.compile(policy["filterTags"]["pattern"])
    assert pattern.search(tag)
    # What the release pushes beside X.Y.Z never becomes staging's tag.
    assert not pattern.search("1.4") and not pattern.search("0123456789abcdef0123456789abcdef01234567")
    assert Version(tag) in SpecifierSet(",".join(policy["policy"]["semver"]["range"].split()))


def test_production_pins_exact_versions():
    for path in PRODUCTION:
        for obj in render(path):
            if not is_built_in(obj) or obj["kind"] not in ("Deployment", "Job", "StatefulSet"):
                continue
            for container in obj["spec"]["template"]["spec"]["containers"]:
                image = container["image"]
                tag = image.split("@")[0].rpartition(":")[2]
                assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[\w.]+)?", tag), (path, image)
                if "@" in image:
                    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.partition("@")[2]), image


def test_every_cluster_reports_its_kustomizations_under_its_own_name():
    workflow = (REPO / ".github/workflows/promote.yml").read_text()
    for env, path in NOTIFICATIONS.items():
        found = objects(path)
        provider, alert = found["Provider"], found["Alert"]
        assert provider["spec"]["type"] == "github" and alert["spec"]["providerRef"]["name"] == provider["metadata"]["name"]
        expression = provider["spec"]["commitStatusExpr"]
        assert expression == ("(event.involvedObject.kind + '/' + event.involvedObject.name).lowerAscii()"
                              f" + '/{env}'")
        sources = {(s["kind"], s["namespace"], s["name"]) for s in alert["spec"]["eventSources"]}
        # The services' Flux Kustomizations live in their own namespaces (tenants/).
        namespaces = {ks["metadata"]["namespace"] for ks in render(f"tenants/{env}")} | {"flux-system"}
        assert sources == {("Kustomization", ns, "*") for ns in namespaces}
    # What the promotion workflow waits for is what staging's expression gives payment's Kustomization.
    assert '.context == "kustomization/payment/staging"' in workflow


@pytest.fixture
def tree(tmp_path):
    """A copy of the overlays and bases scripts/promote edits, to run it on."""
    for part in ("overlays", "base", "components", "scripts"):
        shutil.copytree(REPO / part, tmp_path / part)
    return tmp_path


def promote(tree, *args):
    return subprocess.run([str(tree / "scripts/promote"), *args], capture_output=True, text=True, check=False)


def test_promotion_writes_exact_version_and_digest_into_production_only(tree):
    digest = "sha256:" + "ab" * 32
    staging_before = (tree / "overlays/staging/payment/kustomization.yaml").read_text()
    assert promote(tree, "production", "1.4.2", digest).returncode == 0
    assert (tree / "overlays/staging/payment/kustomization.yaml").read_text() == staging_before
    name = promote(tree, "image").stdout.strip()
    for part in ("payment", "payment-database"):
        rendered = subprocess.run(["kubectl", "kustomize", str(tree / "overlays/production" / part)],
                                  capture_output=True, text=True, check=True).stdout
        images = {c["image"] for o in yaml.safe_load_all(rendered) if o and o["kind"] in ("Deployment", "Job")
                  for c in o["spec"]["template"]["spec"]["containers"] if "payment" in c["image"]}
        assert images == {f"{name}:1.4.2@{digest}"}, (part, images)
        assert 'app.kubernetes.io/version: "1.4.2"' in (tree / "overlays/production" / part / "kustomization.yaml").read_text()
    # Promoting again replaces the digest, never adds a second one.
    assert promote(tree, "production", "1.4.3", "sha256:" + "cd" * 32).returncode == 0
    text = (tree / "overlays/production/payment/kustomization.yaml").read_text()
    assert text.count("digest:") == 1 and "1.4.2" not in text


def test_promotion_refuses_what_is_not_an_exact_version_and_digest(tree):
    for args in (["production", "1.4", "sha256:" + "ab" * 32], ["production", "1.4.2", "latest"], ["production"]):
        assert promote(tree, *args).returncode == 2, args
    assert promote(tree, "staging-version").stdout.strip() == yaml.safe_load(
        (REPO / "overlays/staging/payment/kustomization.yaml").read_text())["images"][0]["newTag"]
