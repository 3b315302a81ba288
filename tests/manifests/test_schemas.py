"""Everything rendered passes kubernetes-validate --strict (Kubernetes 1.30 and the newest
version the installed kubernetes-validate bundles); custom resources are checked by their
own engines (test_flux.py, test_argocd.py, tests/monitoring)."""

from __future__ import annotations

import copy
import functools

import kubernetes_validate.utils as kv
import pytest

from tests.kube import find, render
from tests.manifests.conftest import kustomize_dirs

pytestmark = pytest.mark.manifests

VERSIONS = ("1.30", kv.major_minor(kv.latest_version()))
# Custom resources with no schema in kubernetes-validate, validated elsewhere.
CUSTOM_GROUPS = (
    "kustomize.toolkit.fluxcd.io/",
    "source.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "argoproj.io/",
    "monitoring.coreos.com/",  # tests/monitoring/test_resources.py
)

# kubernetes-validate re-reads its (large) schema files for every object; they never change.
kv.schema_contents = functools.cache(kv.schema_contents)


def validate(obj: dict, version: str) -> None:
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise AssertionError(
            f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: "
            f"{path}: {exc.message}"
        ) from None


def test_newest_bundled_version_is_newer_than_the_oldest_supported():
    assert tuple(map(int, VERSIONS[1].split("."))) > (1, 30)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", kustomize_dirs())
def test_rendered_objects_validate_strictly(path, version):
    for obj in render(path):
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            validate(obj, version)
        except kv.SchemaNotFoundError as exc:
            pytest.fail(f"{path}: no schema: {exc.message} (a removed or misspelled API?)")


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_validation_rejects_an_unknown_field(version):
    """The engine really is strict: the same Deployment with one unknown field fails."""
    deployment = copy.deepcopy(find(render("overlays/staging/payment"), "Deployment", "payment"))
    validate(deployment, version)
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(AssertionError, match="livenesProbe"):
        validate(deployment, version)
