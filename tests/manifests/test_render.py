"""Every kustomization renders cleanly, and the overlays say what the services need."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.kube import REPO, find, render
from tests.manifests.conftest import (
    ENVIRONMENTS,
    PART_NAMESPACES,
    SERVICES,
    component_dirs,
    containers,
    is_built_in,
    kustomize_dirs,
    parts,
)

pytestmark = pytest.mark.manifests

# Deprecated in kustomize v5 (it warns about most of them; this catches them all).
DEPRECATED_FIELDS = {
    "bases", "commonLabels", "patchesStrategicMerge", "patchesJson6902", "vars", "imageTags",
}
OWNED = ("base/antaeus", "base/payment", "overlays", "clusters", "tenants", "infrastructure",
         "components", "argocd")


def test_the_tree_has_every_expected_kustomization():
    dirs = set(kustomize_dirs())
    expected = {"base/antaeus", "base/payment", "base/payment-database", "argocd/base",
                "tenants/base", "infrastructure/controllers"}
    expected |= {f"infrastructure/{env}/controllers" for env in ENVIRONMENTS}
    for env in ENVIRONMENTS:
        expected |= {f"overlays/{env}", f"tenants/{env}", f"argocd/{env}"}
        expected |= {f"overlays/{env}/{part}" for part in ("platform", *parts(env))}
    assert expected <= dirs, f"missing: {sorted(expected - dirs)}"
    # A folder named for what it holds: the services' Flux Kustomizations are not a cluster.
    assert not (REPO / "clusters" / "tenants").exists()


def test_every_component_is_switched_on_somewhere():
    """A Component renders only inside a kustomization that uses it: an unused one would
    go unchecked. The opt-in ones are rendered switched on by their own tests:
    components/backup by test_postgres.py, components/admin-credentials by test_edge.py."""
    opt_in = {"components/backup", "components/admin-credentials"}
    used = set()
    for path in kustomize_dirs():
        kustomization = yaml.safe_load((REPO / path / "kustomization.yaml").read_text())
        used |= {str((REPO / path / c).resolve().relative_to(REPO)) for c in kustomization.get("components", [])}
    assert set(component_dirs()) - opt_in <= used, sorted(set(component_dirs()) - used)
    assert opt_in <= set(component_dirs())


@pytest.mark.parametrize("path", kustomize_dirs())
def test_kustomization_renders_without_warnings(path):
    # tests.kube.render fails on a non-zero exit and on any stderr output (warnings).
    assert render(path), f"{path} renders no objects"


@pytest.mark.parametrize("path", [d for d in kustomize_dirs() + component_dirs() if d.startswith(OWNED)])
def test_kustomization_uses_current_fields_only(path):
    kustomization = yaml.safe_load((REPO / path / "kustomization.yaml").read_text())
    assert not DEPRECATED_FIELDS & set(kustomization), f"{path} uses deprecated fields"
    for entry in kustomization.get("labels", []):
        # Selectors stay on app.kubernetes.io/name, written in the objects themselves.
        assert not entry.get("includeSelectors", False), f"{path}: labels must not touch selectors"


def _env_parts():
    return [pytest.param(env, part, id=f"{env}-{part}") for env in ENVIRONMENTS for part in parts(env)]


@pytest.mark.parametrize(("env", "part"), _env_parts())
def test_service_overlay_is_exactly_its_part_of_the_environment(env, part):
    """Flux applies overlays/<env>/<part> alone, kubectl and Argo CD the whole overlay:
    both must create the same objects (so checks of the whole overlay cover Flux's too)."""
    piece = render(f"overlays/{env}/{part}")
    whole = render(f"overlays/{env}")
    for obj in piece:
        assert obj in whole, f"{obj['kind']}/{obj['metadata']['name']} differs in overlays/{env}"


@pytest.mark.parametrize(("env", "part"), _env_parts())
def test_service_overlay_stays_in_its_namespace(env, part):
    """Flux applies it with that namespace's reconciler account, which can write nowhere else."""
    namespace = PART_NAMESPACES[part]
    for obj in render(f"overlays/{env}/{part}"):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"].get("namespace") == namespace, f"{where} is not in namespace {namespace}"
        assert obj["kind"] != "Namespace", f"{where}: namespaces belong to the platform layer"


def test_staging_renders_only_built_in_kinds():
    """`kubectl apply -k overlays/staging` works on a bare cluster: no operator, no CRD."""
    custom = [f"{o['apiVersion']} {o['kind']}" for o in render("overlays/staging") if not is_built_in(o)]
    assert not custom, custom
    assert not is_built_in(find(render("overlays/production"), "Cluster", "payment-db", "payment"))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_images_are_pinned_by_version_tag(env):
    objects = render(f"overlays/{env}")
    workloads = [find(objects, "Deployment", service, service) for service in SERVICES]
    workloads += [o for o in objects if o["kind"] == "Job"]
    for deployment in workloads:
        service = deployment["metadata"]["name"]
        for container in containers(deployment):
            image = container["image"]
            match = re.fullmatch(
                r"(?P<repo>[a-z0-9.-]+(?::\d+)?/[\w./-]+):(?P<tag>[\w][\w.-]*)(@sha256:[0-9a-f]{64})?", image)
            assert match, f"{service}: image {image!r} is not registry/name:tag[@digest]"
            tag = match["tag"]
            assert tag != "latest" and re.match(r"v?\d+\.\d+", tag), f"{service}: tag {tag!r}"
            if container["name"] != service:
                continue  # a sidecar (payment's nginx proxy) has its own release
            # The recommended version label says which release runs.
            version = deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
            assert version == tag.removeprefix("v"), f"{service}: version label {version} != tag {tag}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_antaeus_is_reachable_from_outside_the_cluster(env):
    objects = render(f"overlays/{env}")
    if env == "staging":
        service = find(objects, "Service", "antaeus-public", "antaeus")
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": "antaeus"}
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    else:
        ingress = find(objects, "Ingress", "antaeus", "antaeus")
        assert ingress["spec"]["ingressClassName"]
        backends = [
            path["backend"]["service"]
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
        ]
        assert backends == [{"name": "antaeus", "port": {"name": "http"}}]
        assert ingress["spec"]["rules"][0]["host"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_configuration_differs_per_environment_through_the_generator(env):
    objects = render(f"overlays/{env}")
    configs = {o["metadata"]["name"].rsplit("-", 1)[0]: o["metadata"]["name"]
               for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["namespace"] == "payment"
               # Not the Grafana dashboard of components/monitoring: content for Grafana, not for the pod.
               and "grafana_dashboard" not in o["metadata"].get("labels", {})}
    assert configs.keys() == {"payment-config", "payment-nginx"}
    name = configs["payment-config"]
    # The generator's content hash: a change of configuration is a new name, so it rolls the pod.
    assert re.fullmatch(r"payment-config-[a-z0-9]{10}", name), name
    assert re.fullmatch(r"payment-nginx-[a-z0-9]{10}", configs["payment-nginx"])
    volumes = find(objects, "Deployment", "payment", "payment")["spec"]["template"]["spec"]["volumes"]
    assert configs["payment-nginx"] in [v["configMap"]["name"] for v in volumes if "configMap" in v]
    refs = [
        ref["configMapRef"]["name"]
        for c in containers(find(objects, "Deployment", "payment", "payment"))
        for ref in c.get("envFrom", [])
        if "configMapRef" in ref
    ]
    assert refs == [name]
