"""The maintained Python models (cloudcoil) that validate custom resources strictly,
unknown fields and wrong types rejected: Flux, cert-manager and the Prometheus Operator.
One registry for every test that checks such objects."""

from __future__ import annotations

from cloudcoil.models.cert_manager.v1 import ClusterIssuer, Issuer
from cloudcoil.models.fluxcd.helm.v2 import HelmRelease
from cloudcoil.models.fluxcd.kustomize.v1 import Kustomization
from cloudcoil.models.fluxcd.source.v1 import GitRepository, HelmRepository
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, PrometheusRule

MODELS = {
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): Kustomization,
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): GitRepository,
    ("source.toolkit.fluxcd.io/v1", "HelmRepository"): HelmRepository,
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): HelmRelease,
    ("cert-manager.io/v1", "ClusterIssuer"): ClusterIssuer,
    ("cert-manager.io/v1", "Issuer"): Issuer,
    ("monitoring.coreos.com/v1", "PodMonitor"): PodMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PrometheusRule,
}


def validate_strictly(obj: dict) -> None:
    model = MODELS.get((obj["apiVersion"], obj["kind"]))
    assert model, f"no model for {obj['apiVersion']} {obj['kind']}"
    model.model_validate(obj, extra="forbid", strict=True)
