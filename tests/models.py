"""The maintained Python models (cloudcoil) that validate custom resources strictly,
unknown fields and wrong types rejected: Flux, cert-manager and the Prometheus Operator.
One registry for every test that checks such objects."""

from __future__ import annotations

import copy

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


# Fields of the pinned controllers that the newest model package does not know yet
# (cloudcoil-models-fluxcd 2.5.1.0 is Flux 2.5; the install/upgrade strategy came with
# helm-controller 1.4). They are set aside here and checked instead by the real API
# server against the pinned CRD (tests/cluster applies every HelmRelease).
NEWER_THAN_MODEL = {
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): (("install", "strategy"), ("upgrade", "strategy")),
}


def validate_strictly(obj: dict) -> None:
    key = (obj["apiVersion"], obj["kind"])
    model = MODELS.get(key)
    assert model, f"no model for {obj['apiVersion']} {obj['kind']}"
    obj = copy.deepcopy(obj)
    for section, field in NEWER_THAN_MODEL.get(key, ()):
        obj["spec"].get(section, {}).pop(field, None)
    model.model_validate(obj, extra="forbid", strict=True)
