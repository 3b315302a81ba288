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
CONTROLLERS = "infrastructure/<env>/controllers"
INFRASTRUCTURE = {
    "staging": {"cloudnative-pg": CONTROLLERS, "cert-manager": CONTROLLERS,
                "kube-prometheus-stack": CONTROLLERS,
                "ingress-nginx": CONTROLLERS, "metrics-server": CONTROLLERS,
                "infrastructure-configs": "infrastructure/configs"},
    "production": {"cloudnative-pg": CONTROLLERS, "cert-manager": CONTROLLERS,
                   "kube-prometheus-stack": CONTROLLERS,
                   "ingress-nginx": CONTROLLERS, "metrics-server": CONTROLLERS,
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
    assert sorted(o["kind"] for o in objects) == (
        ["AppProject"] * 3 + ["Application"] * (2 + len(INFRASTRUCTURE[env])) + ["ConfigMap"])
    for obj in objects:
        assert obj["apiVersion"] == ("v1" if obj["kind"] == "ConfigMap" else "argoproj.io/v1alpha1")
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
    flux = render(INFRASTRUCTURE[env][name].replace("<env>", env))
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
    assert application["spec"]["destination"]["namespace"] == release["spec"]["targetNamespace"]
    assert release["spec"]["targetNamespace"] in {d["namespace"] for d in project["spec"]["destinations"]}
    # Deleting it must not cascade: the CRDs an operator installed own every custom resource.
    assert "resources-finalizer.argocd.argoproj.io" not in application["metadata"].get("finalizers", [])
    if release["spec"]["targetNamespace"] == "kube-system":  # the cluster's own, created by neither
        assert "CreateNamespace=true" not in application["spec"]["syncPolicy"].get("syncOptions", [])
        return
    # The namespace Argo CD creates carries the Pod Security labels Flux's Namespace has.
    namespace = find(flux, "Namespace", release["spec"]["targetNamespace"])
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
    operators = [argo[name] for name, folder in INFRASTRUCTURE[env].items() if folder == CONTROLLERS]
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



# --- The ordering rules Argo CD's sync engine (gitops-engine) applies: within one sync,
# a wave starts only once every resource of the waves before it is Healthy. -------------


def sync_waves(objects: list[dict]) -> dict[int, list[dict]]:
    waves: dict[int, list[dict]] = {}
    for obj in objects:
        waves.setdefault(wave(obj), []).append(obj)
    return waves


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_an_autoscaler_comes_no_earlier_than_its_target(env):
    """Before its Deployment exists, an HPA reports FailedGetScale, Argo CD counts it
    Degraded and fails the sync: the Deployment's wave is never reached."""
    objects = render(f"overlays/{env}")
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert bool(hpas) == (env == "production")
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        target = find(objects, ref["kind"], ref["name"], hpa["metadata"]["namespace"])
        assert wave(hpa) >= wave(target), f"HPA {hpa['metadata']['name']} in wave {wave(hpa)}, its target in {wave(target)}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_nothing_waits_behind_an_ingress(env):
    """An Ingress stays Progressing until an ingress controller writes its address: it
    must be in the last wave of its Application, and the controller must be installed by
    an Application of an earlier wave."""
    objects = render(f"overlays/{env}")
    last = max(sync_waves(objects))
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    for ingress in ingresses:
        assert wave(ingress) == last, f"Ingress {ingress['metadata']['name']} in wave {wave(ingress)}, last is {last}"
    if ingresses:
        applications = render(f"argocd/{env}")
        services = find(applications, "Application", f"antaeus-billing-{env}")
        controller = find(applications, "Application", f"ingress-nginx-{env}")
        assert wave(controller) < wave(services)
        classes = {i["spec"]["ingressClassName"] for i in ingresses}
        assert classes == {controller["spec"]["source"]["helm"]["valuesObject"]["controller"]["ingressClassResource"]["name"]}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_argo_cd_manages_its_own_applications_and_waits_on_their_health(env):
    """An app of apps syncs argocd/<env> (itself included), so a change under argocd/ needs
    no manual apply; and Argo CD's Application health check is configured, without which
    waves across Applications order only their creation, not their readiness."""
    objects = render(f"argocd/{env}")
    root = find(objects, "Application", f"antaeus-billing-apps-{env}")
    assert root["spec"]["source"]["path"] == f"argocd/{env}"
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    project = find(objects, "AppProject", root["spec"]["project"])
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for obj in render(root["spec"]["source"]["path"]):
        assert (group_of(obj), obj["kind"]) in allowed, obj["kind"]
        assert obj["metadata"]["namespace"] == root["spec"]["destination"]["namespace"]
    settings = find(objects, "ConfigMap", "argocd-cm", "argocd")
    assert settings["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd", "Argo CD reads only its own"
    script = settings["data"]["resource.customizations.health.argoproj.io_Application"]
    assert "obj.status.health.status" in script and "return hs" in script
    options = settings["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
    # Only the keys written here are owned; the operator's other settings stay.
    assert {"ServerSideApply=true", "Prune=false", "Delete=false"} <= set(options)
    assert "ServerSideApply=true" in root["spec"]["syncPolicy"]["syncOptions"]
    # Waves across Applications: every infrastructure layer before the services.
    services = find(objects, "Application", f"antaeus-billing-{env}")
    for app in objects:
        if app["kind"] == "Application" and app["spec"]["project"] == "antaeus-billing-infrastructure":
            assert wave(app) < wave(services), app["metadata"]["name"]


def component_kinds() -> set[tuple[str, str]]:
    """The kinds every optional component of the app side (components/*, not their
    platform and tenant parts, which Flux applies) adds to an overlay."""
    kinds = set()
    for kustomization in (REPO / "components").glob("*/kustomization.yaml"):
        spec = load_yaml(kustomization)
        for resource in spec.get("resources", []):
            path = kustomization.parent / resource
            if path.is_file():
                kinds |= {(group_of(o), o["kind"]) for o in load_yaml_all(path)}
    return kinds


def load_yaml(path):
    import yaml
    return yaml.safe_load(path.read_text())


def load_yaml_all(path):
    import yaml
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_project_allows_every_optional_component(env):
    """Switching a component on (backups, monitoring, PostgreSQL, admin credentials) must
    not fail the sync on a kind the project refuses."""
    project = find(render(f"argocd/{env}"), "AppProject", "antaeus-billing")
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    missing = {k for k in component_kinds() if k not in allowed}
    assert {("postgresql.cnpg.io", "ScheduledBackup"), ("barmancloud.cnpg.io", "ObjectStore")} <= component_kinds()
    assert not missing, f"the antaeus-billing project refuses {sorted(missing)}"


def test_the_guide_names_every_file_that_carries_the_repository_url():
    guide = (REPO / "docs" / "deploy.md").read_text()
    placeholder = "https://github.com/example-org/antaeus-payment.git"
    carrying = sorted(str(p.relative_to(REPO)) for p in (REPO / "argocd").rglob("*.yaml") if placeholder in p.read_text())
    assert carrying
    named = [p for p in carrying if p in guide or p.replace("staging", "<env>").replace("production", "<env>") in guide]
    assert named == carrying, f"docs/deploy.md does not name {sorted(set(carrying) - set(named))}"
