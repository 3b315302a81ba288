"""Shared helpers for the manifest tests: render Kustomize trees with the real engine."""

from __future__ import annotations

import functools
import pathlib
import shutil
import subprocess

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError("kubectl is not on PATH; the manifest tests need 'kubectl kustomize'")
    return path


@functools.cache
def render_text(path: str) -> str:
    """Render a kustomization (path relative to the repo) with `kubectl kustomize`.

    Any warning kustomize prints (deprecated fields, for instance) fails the render.
    """
    result = subprocess.run(
        [kubectl(), "kustomize", str(REPO / path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or result.stderr.strip():
        raise AssertionError(
            f"kubectl kustomize {path} failed (exit {result.returncode}):\n{result.stderr}"
        )
    return result.stdout


def render(path: str) -> list[dict]:
    """The rendered objects of a kustomization, as dicts (a fresh copy on every call)."""
    return [doc for doc in yaml.safe_load_all(render_text(path)) if doc]


def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    matches = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
    if len(matches) != 1:
        raise AssertionError(f"expected one {kind} {namespace}/{name}, found {len(matches)}")
    return matches[0]


# flux bootstrap writes clusters/<env>/flux-system/ in a fork: the controllers and their
# CRDs (this file), and a Kustomization that applies the cluster folder itself.
BOOTSTRAP_COMPONENTS = "gotk-components.yaml"


def cluster_manifests(env: str) -> list[dict]:
    """What the bootstrap's flux-system Kustomization applies beside Flux itself: every
    manifest under clusters/<env>/ (Flux generates a kustomization.yaml including them all)."""
    root = REPO / "clusters" / env
    assert not (root / "kustomization.yaml").exists(), "Flux would then apply only what it lists"
    return [
        obj
        for path in sorted(root.rglob("*.yaml"))
        if path.name != BOOTSTRAP_COMPONENTS
        for obj in yaml.safe_load_all(path.read_text())
        if obj
    ]


def is_bootstrap(ks: dict) -> bool:
    """The Kustomization `flux bootstrap` writes into clusters/<env>/flux-system/ (in a
    fork that has been bootstrapped): it applies the cluster folder itself."""
    return ks["metadata"]["name"] == "flux-system" and ks["metadata"]["namespace"] == "flux-system"
