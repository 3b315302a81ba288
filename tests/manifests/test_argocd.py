"""The Argo CD entry points: two AppProjects and, per environment, the infrastructure
Applications (the operators, their custom resources, production's authentication gate) and
the Application that syncs the same overlay Flux and kubectl use, which the project really
allows; the layers in Flux's order and the database before its migration before the app
(sync waves)."""

from __future__ import annotations

import pytest

from tests.kube import REPO, find, render
from tests.manifests.conftest import ENVIRONMENTS, is_built_in

pytestmark = pytest.mark.manifests

WAVE = "argocd.argoproj.io/sync-wave"


def group_of(obj: dict) -> str:
    return obj["apiVersion"].rpartition("/")[0]


def wave(obj: dict) -> int:
    return int(obj["metadata"].get("annotations", {}).get(WAVE, "0"))


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def env(request) -> str:
    return request.param


# The infrastructure Applications of each environment, by Flux's folder for the same layer:
# the operators everywhere, their custom resources everywhere, the edge's authentication
# gate in production only (as clusters/<env>/infrastructure.yaml).
INFRASTRUCTURE = {
    "staging": {"cloudnative-pg": "infrastructure/controllers", "cert-manager": "infrastructure/controllers",
                "kube-prometheus-stack": "infrastructure/controllers",
                "infrastructure-configs": "infrastructure/configs"},
    "production": {"cloudnative-pg": "infrastructure/controllers", "cert-manager": "infrastructure/controllers",
                   "kube-prometheus-stack": "infrastructure/controllers",
                   "infrastructure-configs": "infrastructure/configs", "oauth2-proxy": "infrastructure/auth",
                   "oauth2-proxy-namespace": "infrastructure/auth/namespace"},
}
# Folders of plain manifests from this repository (the others hold a Flux HelmRelease).
PLAIN_FOLDERS = {"infrastructure/configs", "infrastructure/auth/namespace"}


@pytest.fixture(scope="module")
def argo(env) -> dict[str, dict]:
    """{"project", "application", "operator-project", <infrastructure Application name>...}
    of argocd/<env>."""
    objects = render(f"argocd/{env}")
    assert sorted(o["kind"] for o in objects) == ["AppProject"] * 2 + ["Application"] * (1 + len(INFRASTRUCTURE[env]))
    for obj in objects:
        assert obj["apiVersion"] == "argoproj.io/v1alpha1"
        assert obj["metadata"]["namespace"] == "argocd"
    return {
        "project": find(objects, "AppProject", "antaeus-billing"),
        "application": find(objects, "Application", f"antaeus-billing-{env}"),
        "operator-project": find(objects, "AppProject", "antaeus-billing-infrastructure"),
        **{name: find(objects, "Application", f"{name}-{env}") for name in INFRASTRUCTURE[env]},
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


def helm_applications(env: str) -> list[tuple[str, str]]:
    return [(name, folder) for name, folder in INFRASTRUCTURE[env].items() if folder not in PLAIN_FOLDERS]


@pytest.mark.parametrize(("env", "name"), [(e, n) for e in ENVIRONMENTS for n, _ in helm_applications(e)])
def test_chart_applications_install_the_same_pinned_chart_with_the_same_values_as_flux(env, name):
    objects = render(f"argocd/{env}")
    application = find(objects, "Application", f"{name}-{env}")
    project = find(objects, "AppProject", "antaeus-billing-infrastructure")
    flux = render(INFRASTRUCTURE[env][name])
    release = find(flux, "HelmRelease", name)
    repository = find(flux, "HelmRepository", release["spec"]["chart"]["spec"]["sourceRef"]["name"])
    source = application["spec"]["source"]
    assert source["chart"] == release["spec"]["chart"]["spec"]["chart"]
    assert source["targetRevision"] == release["spec"]["chart"]["spec"]["version"]
    assert source["repoURL"] == repository["spec"]["url"] in project["spec"]["sourceRepos"]
    assert source["helm"]["releaseName"] == release["spec"]["releaseName"]
    # The same values: an identity provider filled in for Flux is filled in for Argo CD too.
    assert source["helm"].get("valuesObject", {}) == release["spec"].get("values", {})
    assert application["spec"]["project"] == project["metadata"]["name"]
    assert application["spec"]["destination"]["namespace"] == release["metadata"]["namespace"]
    assert release["metadata"]["namespace"] in {d["namespace"] for d in project["spec"]["destinations"]}
    # The namespace Argo CD creates carries the Pod Security labels Flux's Namespace has.
    namespace = find(flux, "Namespace", release["metadata"]["namespace"])
    pod_security = {k: v for k, v in namespace["metadata"]["labels"].items() if k.startswith("pod-security.")}
    if "CreateNamespace=true" in application["spec"]["syncPolicy"].get("syncOptions", []):
        assert application["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"] == pod_security
    else:  # another Application syncs the namespace, from this repository, labels and all
        paths = [o["spec"]["source"]["path"] for o in objects if o["kind"] == "Application"
                 and "path" in o["spec"]["source"]]
        synced = [n for path in paths for n in render(path)
                  if n["kind"] == "Namespace" and n["metadata"]["name"] == namespace["metadata"]["name"]]
        assert [n["metadata"]["labels"] for n in synced] == [namespace["metadata"]["labels"]]
    # Deleting it must not cascade: the CRDs an operator installed own every custom resource.
    assert "resources-finalizer.argocd.argoproj.io" not in application["metadata"].get("finalizers", [])


def test_infrastructure_applications_are_ordered_before_the_services(env, argo):
    """operators -> their custom resources -> (production) the authentication gate -> the
    service Application, by sync wave when argocd/<env> is synced by a parent Application."""
    operators = [argo[name] for name, folder in INFRASTRUCTURE[env].items() if folder == "infrastructure/controllers"]
    configs = argo["infrastructure-configs"]
    chain = [max(wave(o) for o in operators), wave(configs)]
    if env == "production":
        chain.append(wave(argo["oauth2-proxy"]))
    chain.append(wave(argo["application"]))
    assert chain == sorted(set(chain)), f"waves not strictly increasing: {chain}"
    # The configs Application syncs the folder Flux's infrastructure-configs applies, from
    # this repository, through the infrastructure project (the only one allowed ClusterIssuer).
    project = argo["operator-project"]
    assert configs["spec"]["source"]["path"] == "infrastructure/configs"
    assert configs["spec"]["source"]["repoURL"] in project["spec"]["sourceRepos"]
    assert configs["spec"]["project"] == project["metadata"]["name"]
    cluster_kinds = {(k["group"], k["kind"]) for k in project["spec"]["clusterResourceWhitelist"]}
    for obj in render("infrastructure/configs"):
        assert (group_of(obj), obj["kind"]) in cluster_kinds, obj["kind"]
    assert "SkipDryRunOnMissingResource=true" in configs["spec"]["syncPolicy"]["syncOptions"]
    # Staging is open by design: no authentication gate there.
    assert ("oauth2-proxy" in argo) == (env == "production")


def test_auth_namespace_and_its_network_policies_are_synced_before_the_chart():
    """Argo CD applies what Flux applies from infrastructure/auth besides the chart (the
    namespace and its NetworkPolicies), from this repository, a wave before the chart's
    pods start there, through a project that allows each kind."""
    objects = render("argocd/production")
    application = find(objects, "Application", "oauth2-proxy-namespace-production")
    chart = find(objects, "Application", "oauth2-proxy-production")
    project = find(objects, "AppProject", "antaeus-billing-infrastructure")
    source = application["spec"]["source"]
    assert source["repoURL"] in project["spec"]["sourceRepos"]
    assert application["spec"]["project"] == project["metadata"]["name"]

    def key(obj: dict) -> tuple:
        return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]

    synced = render(source["path"])
    assert sorted(map(key, synced)) == sorted(key(o) for o in render("infrastructure/auth") if is_built_in(o))
    assert {o["kind"] for o in synced} == {"Namespace", "NetworkPolicy"}
    cluster = {(k["group"], k["kind"]) for k in project["spec"]["clusterResourceWhitelist"]}
    namespaced = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for obj in synced:
        assert (group_of(obj), obj["kind"]) in (namespaced if obj["metadata"].get("namespace") else cluster), key(obj)
    assert application["spec"]["destination"]["namespace"] == chart["spec"]["destination"]["namespace"]
    assert wave(application) < wave(chart)
    assert application["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    # The namespace holds the Secret created out of git: no GitOps operation deletes it.
    (namespace,) = [o for o in synced if o["kind"] == "Namespace"]
    annotations = namespace["metadata"]["annotations"]
    assert annotations["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
    assert {"Prune=false", "Delete=false"} <= set(annotations["argocd.argoproj.io/sync-options"].split(","))


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

