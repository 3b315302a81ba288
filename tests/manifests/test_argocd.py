"""The Argo CD entry points: two AppProjects and, per environment, the operator's
Application and the Application that syncs the same overlay Flux and kubectl use, which
the project really allows; the database before its migration before the app (sync waves)."""

from __future__ import annotations

import pytest

from tests.kube import REPO, find, render
from tests.manifests.conftest import ENVIRONMENTS

pytestmark = pytest.mark.manifests

WAVE = "argocd.argoproj.io/sync-wave"


def group_of(obj: dict) -> str:
    return obj["apiVersion"].rpartition("/")[0]


def wave(obj: dict) -> int:
    return int(obj["metadata"].get("annotations", {}).get(WAVE, "0"))


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def env(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def argo(env) -> dict[str, dict]:
    """{"project", "application", "operator-project", "operator"} of argocd/<env>."""
    objects = render(f"argocd/{env}")
    assert sorted(o["kind"] for o in objects) == ["AppProject", "AppProject", "Application", "Application"]
    for obj in objects:
        assert obj["apiVersion"] == "argoproj.io/v1alpha1"
        assert obj["metadata"]["namespace"] == "argocd"
    return {
        "project": find(objects, "AppProject", "antaeus-billing"),
        "application": find(objects, "Application", f"antaeus-billing-{env}"),
        "operator-project": find(objects, "AppProject", "antaeus-billing-infrastructure"),
        "operator": find(objects, "Application", f"cloudnative-pg-{env}"),
    }


def test_application_syncs_the_environment_overlay(env, argo):
    project, application = argo["project"], argo["application"]
    spec = application["spec"]
    assert spec["project"] == project["metadata"]["name"]
    assert spec["source"]["path"] == f"overlays/{env}"
    assert (REPO / spec["source"]["path"] / "kustomization.yaml").is_file()
    assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
    assert spec["source"]["targetRevision"]
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    servers = {d["server"] for d in project["spec"]["destinations"]}
    assert spec["destination"]["server"] in servers


def test_project_allows_everything_the_overlay_creates_and_no_more_namespaces(env, argo):
    project, application = argo["project"], argo["application"]
    allowed_cluster = {(k["group"], k["kind"]) for k in project["spec"]["clusterResourceWhitelist"]}
    allowed_namespaced = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    namespaces = {d["namespace"] for d in project["spec"]["destinations"]}
    assert "*" not in namespaces and "*" not in {k for _, k in allowed_cluster}
    used_namespaces = set()
    for obj in render(application["spec"]["source"]["path"]):
        kind = (group_of(obj), obj["kind"])
        namespace = obj["metadata"].get("namespace")
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if namespace is None:
            assert kind in allowed_cluster, f"{where}: cluster-scoped kind not in the project"
        else:
            assert kind in allowed_namespaced, f"{where}: kind not in the project"
            assert namespace in namespaces, f"{where}: namespace {namespace} not a destination"
            used_namespaces.add(namespace)
    assert used_namespaces == namespaces, "the project names namespaces nothing is deployed to"
    # The service project never creates CRDs, cluster-wide bindings or webhooks.
    assert not {k for _, k in allowed_cluster} & {
        "CustomResourceDefinition", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


def test_operator_application_installs_the_same_pinned_chart_as_flux(env, argo):
    operator, project = argo["operator"], argo["operator-project"]
    [release] = [o for o in render("infrastructure/controllers") if o["kind"] == "HelmRelease"]
    [repository] = [o for o in render("infrastructure/controllers") if o["kind"] == "HelmRepository"]
    source = operator["spec"]["source"]
    assert source["chart"] == release["spec"]["chart"]["spec"]["chart"]
    assert source["targetRevision"] == release["spec"]["chart"]["spec"]["version"]
    assert source["repoURL"] == repository["spec"]["url"] in project["spec"]["sourceRepos"]
    assert source["helm"]["releaseName"] == release["spec"]["releaseName"]
    assert operator["spec"]["project"] == project["metadata"]["name"]
    assert operator["spec"]["destination"]["namespace"] == release["metadata"]["namespace"]
    assert {d["namespace"] for d in project["spec"]["destinations"]} == {release["metadata"]["namespace"]}
    # Before the service Application when both are synced by a parent (app of apps).
    assert wave(operator) < wave(argo["application"])
    # Deleting it must not cascade: the CRDs it installed own every database Cluster.
    assert "resources-finalizer.argocd.argoproj.io" not in operator["metadata"].get("finalizers", [])


def test_database_then_migration_then_app_in_production():
    objects = render("overlays/production")
    cluster = find(objects, "Cluster", "payment-db", "payment")
    job = find(objects, "Job", "payment-migrate", "payment")
    deployment = find(objects, "Deployment", "payment", "payment")
    namespace = find(objects, "Namespace", "payment")
    assert wave(namespace) <= 0 < wave(cluster) < wave(job) < wave(deployment)
    annotations = job["metadata"]["annotations"]
    # A Sync hook, not PreSync: on the first sync PreSync would run before the database exists.
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    # The CRD may be unknown to the dry run while the operator Application is still syncing.
    options = cluster["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
    assert "SkipDryRunOnMissingResource=true" in options

