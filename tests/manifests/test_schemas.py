"""Everything rendered passes kubernetes-validate --strict (Kubernetes 1.30 and the newest
version the installed kubernetes-validate bundles); custom resources are checked by their
own engines where a maintained one exists (Flux: cloudcoil-models-fluxcd, test_flux.py and
test_edge.py; cert-manager: cloudcoil-models-cert-manager, test_edge.py; the Prometheus
Operator: cloudcoil-models-prometheus-operator, tests/monitoring/test_resources.py; Argo CD,
CloudNativePG, External Secrets: npm models, test_custom_resources.py), and the
kinds with none are named in every run's warnings summary."""

from __future__ import annotations

import copy
import functools
import warnings

import kubernetes_validate.utils as kv
import pytest

from tests.kube import find, render
from tests.manifests.conftest import is_built_in, kustomize_dirs
from tests.manifests.test_custom_resources import NPM_VALIDATED, PARTLY_VALIDATED

pytestmark = pytest.mark.manifests

VERSIONS = ("1.30", kv.major_minor(kv.latest_version()))
# Custom resources: kubernetes-validate has no schema for them.
# - validated strictly against cloudcoil-models-fluxcd in test_flux.py,
#   cloudcoil-models-cert-manager in test_edge.py, cloudcoil-models-prometheus-operator in
#   tests/monitoring/test_resources.py, and against the @kubernetes-models npm packages in
#   test_custom_resources.py:
MODEL_VALIDATED = {
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ("source.toolkit.fluxcd.io/v1", "HelmRepository"),
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
    ("cert-manager.io/v1", "ClusterIssuer"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
} | NPM_VALIDATED
# - no maintained schema or model package exists for these (the Barman Cloud plugin's
#   ObjectStore: only its spec.configuration is model-checked, test_custom_resources.py);
#   the behaviour tests check their fields (test_postgres.py). Named here, and in the
#   warnings summary of every run, so the gap stays visible.
UNVALIDATED = {
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
}


class NoSchemaWarning(UserWarning):
    """A custom resource kind no maintained schema package covers."""


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
        if not is_built_in(obj):
            kind = (obj["apiVersion"], obj["kind"])
            assert kind in MODEL_VALIDATED | UNVALIDATED, f"{path}: {kind} is checked by nothing; add a check"
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


def test_custom_kinds_without_a_schema_are_named():
    """Every custom kind the tree renders is either model-validated or listed (and warned
    about) as unvalidated; a listed kind nothing renders any more is dropped from the list."""
    rendered = {(o["apiVersion"], o["kind"]) for path in kustomize_dirs() for o in render(path) if not is_built_in(o)}
    # components/backup and components/admin-credentials are opt-in: their kinds render in
    # test_postgres.py and test_edge.py.
    rendered |= {("postgresql.cnpg.io/v1", "ScheduledBackup"), ("barmancloud.cnpg.io/v1", "ObjectStore"),
                 ("external-secrets.io/v1", "ExternalSecret")}
    assert rendered <= MODEL_VALIDATED | UNVALIDATED, rendered - (MODEL_VALIDATED | UNVALIDATED)
    assert UNVALIDATED <= rendered, f"listed, rendered nowhere: {UNVALIDATED - rendered}"
    for api_version, kind in sorted(UNVALIDATED):
        part = PARTLY_VALIDATED.get((api_version, kind))
        checked = f"only {part} is model-checked" if part else "not schema-validated"
        warnings.warn(NoSchemaWarning(f"{api_version} {kind}: no maintained schema package; {checked}"))
