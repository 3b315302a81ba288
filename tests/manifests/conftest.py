"""Shared facts about the GitOps tree for the manifest tests."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from tests.kube import REPO, render

ENVIRONMENTS = ("staging", "production")
SERVICES = ("antaeus", "payment")
# Where kustomizations live; every one of them must render.
KUSTOMIZE_ROOTS = ("base", "overlays", "clusters", "infrastructure", "components", "argocd")


def kustomize_dirs() -> list[str]:
    """Every directory under the GitOps roots that holds a kustomization.yaml."""
    return sorted(
        str(path.parent.relative_to(REPO))
        for root in KUSTOMIZE_ROOTS
        for path in (REPO / root).rglob("kustomization.yaml")
    )


def load_yaml_documents(path: pathlib.Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers(obj: dict) -> list[dict]:
    spec = obj["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


@pytest.fixture(scope="session", params=ENVIRONMENTS)
def env(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def env_objects(env) -> list[dict]:
    """Everything `kubectl apply -k overlays/<env>` would create."""
    return render(f"overlays/{env}")
