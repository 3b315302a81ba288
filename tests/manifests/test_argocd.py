"""The Argo CD entry points: an AppProject and one Application per environment that sync
the same overlays Flux and kubectl use, and that the project really allows."""

from __future__ import annotations

import pytest

from tests.kube import REPO, render
from tests.manifests.conftest import ENVIRONMENTS

pytestmark = pytest.mark.manifests


def group_of(obj: dict) -> str:
    return obj["apiVersion"].rpartition("/")[0]


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def env(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def argo(env) -> tuple[dict, dict]:
    objects = render(f"argocd/{env}")
    assert sorted(o["kind"] for o in objects) == ["AppProject", "Application"]
    for obj in objects:
        assert obj["apiVersion"] == "argoproj.io/v1alpha1"
        assert obj["metadata"]["namespace"] == "argocd"
    project = next(o for o in objects if o["kind"] == "AppProject")
    application = next(o for o in objects if o["kind"] == "Application")
    return project, application


def test_application_syncs_the_environment_overlay(env, argo):
    project, application = argo
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
    project, application = argo
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

