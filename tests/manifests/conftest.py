"""Shared facts about the GitOps tree for the manifest tests."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from tests.kube import REPO, render

ENVIRONMENTS = ("staging", "production")
SERVICES = ("antaeus", "payment")
# Where kustomizations live; every one of them must render.
KUSTOMIZE_ROOTS = ("base", "overlays", "clusters", "tenants", "infrastructure", "components", "argocd")
# The extra parts of an environment, beside platform and the services: payment's database
# where payment runs on PostgreSQL.
EXTRA_PARTS = {"staging": (), "production": ("payment-database",)}
# Which namespace each deployable part of an environment overlay writes into.
PART_NAMESPACES = {"antaeus": "antaeus", "payment": "payment", "payment-database": "payment"}


def _kind(path) -> str:
    return yaml.safe_load(path.read_text()).get("kind", "Kustomization")


def kustomize_dirs() -> list[str]:
    """Every directory under the GitOps roots that holds a buildable kustomization.yaml
    (Components are built only as part of the kustomizations that use them)."""
    return sorted(
        str(path.parent.relative_to(REPO))
        for root in KUSTOMIZE_ROOTS
        for path in (REPO / root).rglob("kustomization.yaml")
        if _kind(path) == "Kustomization"
    )


def component_dirs() -> list[str]:
    """Every directory holding a Kustomize Component."""
    return sorted(
        str(path.parent.relative_to(REPO))
        for root in KUSTOMIZE_ROOTS
        for path in (REPO / root).rglob("kustomization.yaml")
        if _kind(path) == "Component"
    )


def parts(env: str) -> tuple[str, ...]:
    """The parts of overlays/<env> Flux applies one by one (besides platform)."""
    return (*SERVICES, *EXTRA_PARTS[env])


def is_built_in(obj: dict) -> bool:
    """A kind the Kubernetes API server serves without any CRD."""
    group = obj["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def load_yaml_documents(path: pathlib.Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers(obj: dict) -> list[dict]:
    """The containers of a Deployment's or a Job's pod template."""
    spec = obj["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def secret_file(workload: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) of the mounted Secret file at `path` in the first container."""
    pod = workload["spec"]["template"]["spec"]
    directory, _, filename = path.rpartition("/")
    [mount] = [m for m in containers(workload)[0]["volumeMounts"] if m["mountPath"] == directory]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    [item] = [i for i in volume["secret"]["items"] if i["path"] == filename]
    assert mount.get("readOnly") is True
    return volume["secret"]["secretName"], item["key"]


@pytest.fixture(scope="session", params=ENVIRONMENTS)
def env(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def env_objects(env) -> list[dict]:
    """Everything `kubectl apply -k overlays/<env>` would create."""
    return render(f"overlays/{env}")
