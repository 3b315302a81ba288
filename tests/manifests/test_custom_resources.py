"""Custom resources checked by their maintained models: the @kubernetes-models npm packages
for Argo CD, CloudNativePG and the External Secrets Operator (crd-models/, pinned by its
package-lock.json; `make test` installs them), the only maintained models for those kinds.
Every object is checked twice (crd-models/validate.mjs): by the model's validate() (types,
required fields, enums, patterns) and by the TypeScript compiler against the same
packages' types, which rejects unknown fields at any depth (the models let them through)."""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess

import pytest

from tests.kube import REPO, find, render
from tests.manifests.conftest import is_built_in, kustomize_dirs
from tests.manifests.test_postgres import _render_with

pytestmark = pytest.mark.manifests

CRD_MODELS = REPO / "tests" / "manifests" / "crd-models"
# Kinds a model checks whole.
NPM_VALIDATED = {
    ("argoproj.io/v1alpha1", "AppProject"),
    ("argoproj.io/v1alpha1", "Application"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("external-secrets.io/v1", "ExternalSecret"),
    # Flux image automation and notifications (clusters/<env>/, tests/delivery/test_image_automation.py).
    ("image.toolkit.fluxcd.io/v1", "ImageRepository"),
    ("image.toolkit.fluxcd.io/v1", "ImagePolicy"),
    ("image.toolkit.fluxcd.io/v1", "ImageUpdateAutomation"),
    ("notification.toolkit.fluxcd.io/v1beta3", "Provider"),
    ("notification.toolkit.fluxcd.io/v1beta3", "Alert"),
}
# Kinds with no model of their own, of which one part is checked: the Barman Cloud plugin's
# ObjectStore embeds barman-cloud's BarmanObjectStoreConfiguration, which the CloudNativePG
# package models; the rest of its spec is checked by nothing.
PARTLY_VALIDATED = {("barmancloud.cnpg.io/v1", "ObjectStore"): "spec.configuration"}
# components/backup is opt-in: rendered on production's database, as a user would switch it on.
BACKUP = "components/backup"


def check(objects: list[dict]) -> list[dict]:
    """crd-models/validate.mjs's verdict on each object, in order."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the custom resources are checked by npm model packages "
                    "(tests/manifests/crd-models). Install Node.js 18 or newer and npm "
                    "(Debian: apt-get install nodejs npm); make test installs the packages.", pytrace=False)
    if not (CRD_MODELS / "node_modules").is_dir():
        pytest.fail("the npm model packages are not installed: run `make test` "
                    "(or `make tests/manifests/crd-models/.installed`).", pytrace=False)
    run = subprocess.run([node, str(CRD_MODELS / "validate.mjs")], input=json.dumps(objects),
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, f"validate.mjs failed (exit {run.returncode}):\n{run.stderr}"
    results = json.loads(run.stdout)
    assert len(results) == len(objects)
    return results


def rendered(path: str) -> list[dict]:
    if path == BACKUP:
        return _render_with("overlays/production/payment-database", BACKUP, "payment")
    return render(path)


PATHS = [*kustomize_dirs(), BACKUP]


@functools.cache
def verdicts() -> dict[str, list[dict]]:
    """Every custom object of every path, checked in one run of the checker."""
    custom = {path: [o for o in rendered(path) if not is_built_in(o)] for path in PATHS}
    results = iter(check([o for objects in custom.values() for o in objects]))
    return {path: [next(results) for _ in objects] for path, objects in custom.items()}


@pytest.mark.parametrize("path", PATHS)
def test_custom_resources_match_their_models(path):
    problems = []
    for result in verdicts()[path]:
        kind = (result["apiVersion"], result["kind"])
        if kind in NPM_VALIDATED:
            assert result["model"] and result["at"] is None, result
        elif kind in PARTLY_VALIDATED:
            assert result["model"] and result["at"] == PARTLY_VALIDATED[kind], result
        problems += [f"{result['kind']}/{result['name']} {error}" for error in result["errors"]]
    assert not problems, f"{path}:\n" + "\n".join(problems)


def test_the_checker_models_exactly_the_listed_kinds():
    """No kind is claimed as checked that the checker passes over, and the reverse."""
    seen = {}
    for results in verdicts().values():
        for result in results:
            seen[(result["apiVersion"], result["kind"])] = (result["model"] is not None, result["at"])
    claimed = {kind: (True, None) for kind in NPM_VALIDATED}
    claimed |= {kind: (True, at) for kind, at in PARTLY_VALIDATED.items()}
    for kind, verdict in seen.items():
        assert verdict == claimed.get(kind, (False, None)), (kind, verdict)
    assert {k for k, (modelled, _) in seen.items() if modelled}, "no rendered object was checked"


def _errors_of(variants: dict[str, dict]) -> dict[str, list[str]]:
    return dict(zip(variants, (r["errors"] for r in check(list(variants.values())))))


def test_unknown_fields_wrong_types_and_missing_fields_fail():
    """The same objects the tree renders, each spoiled in one way: every spoiling fails."""
    production = rendered(BACKUP) + render("argocd/production")
    cluster = find(production, "Cluster", "payment-db", "payment")
    schedule = find(production, "ScheduledBackup", "payment-db-daily", "payment")
    store = find(production, "ObjectStore", "payment-db-backups", "payment")
    application = find(production, "Application", "antaeus-billing-production")
    project = find(production, "AppProject", "antaeus-billing")

    def spoil(obj, change):
        obj = copy.deepcopy(obj)
        change(obj)
        return obj

    variants = {
        "cluster": cluster, "schedule": schedule, "store": store, "application": application, "project": project,
        "cluster unknown field": spoil(cluster, lambda o: o["spec"].update(instancess=3)),
        "cluster nested unknown field": spoil(cluster, lambda o: o["spec"]["storage"].update(sizee="1Gi")),
        "cluster wrong type": spoil(cluster, lambda o: o["spec"].update(instances="3")),
        "cluster unknown metadata field": spoil(cluster, lambda o: o["metadata"].update(label={})),
        "schedule bad enum": spoil(schedule, lambda o: o["spec"].update(method="plugins")),
        "schedule missing cluster": spoil(schedule, lambda o: o["spec"].pop("cluster")),
        "store unknown field": spoil(store, lambda o: o["spec"]["configuration"]["wal"].update(compresion="gzip")),
        "store missing path": spoil(store, lambda o: o["spec"]["configuration"].pop("destinationPath")),
        "application unknown field": spoil(application, lambda o: o["spec"]["syncPolicy"].update(automatic={})),
        "application wrong type": spoil(application, lambda o: o["spec"].update(revisionHistoryLimit="3")),
        "application missing project": spoil(application, lambda o: o["spec"].pop("project")),
        "project unknown field": spoil(project, lambda o: o["spec"].update(sourceRepo=[])),
    }
    errors = _errors_of(variants)
    for name in ("cluster", "schedule", "store", "application", "project"):
        assert errors.pop(name) == [], name
    expected = {
        "cluster unknown field": "'\"instancess\"' does not exist in type 'IClusterSpec'",
        "cluster nested unknown field": "'\"sizee\"' does not exist",
        "cluster wrong type": "/spec/instances: must be integer",
        "cluster unknown metadata field": "'\"label\"' does not exist in type 'IObjectMeta'",
        "schedule bad enum": "/spec/method: must be equal to one of the allowed values",
        "schedule missing cluster": "/spec: must have required property cluster",
        "store unknown field": "'\"compresion\"' does not exist",
        "store missing path": "must have required property destinationPath",
        "application unknown field": "'\"automatic\"' does not exist in type 'ISyncPolicy'",
        "application wrong type": "/spec/revisionHistoryLimit: must be integer",
        "application missing project": "/spec: must have required property project",
        "project unknown field": "'\"sourceRepo\"' does not exist in type 'IAppProjectSpec'",
    }
    for name, message in expected.items():
        assert any(message in e for e in errors[name]), (name, errors[name])


def test_an_external_secret_is_checked_the_same_way():
    """ExternalSecret (external-secrets.io/v1), in the shape the ESO documentation gives."""
    secret = {
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "payment-admin", "namespace": "payment"},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
            "target": {"name": "payment-admin", "creationPolicy": "Owner"},
            "data": [{"secretKey": "password", "remoteRef": {"key": "payment/admin", "property": "password"}}],
        },
    }
    misspelled = copy.deepcopy(secret)
    misspelled["spec"]["secretStoreRef"]["nmae"] = misspelled["spec"]["secretStoreRef"].pop("name")
    wrong_type = copy.deepcopy(secret)
    wrong_type["spec"]["data"][0]["remoteRef"]["key"] = 7
    errors = _errors_of({"ok": secret, "misspelled": misspelled, "wrong type": wrong_type})
    assert errors["ok"] == []
    assert any("'\"nmae\"' does not exist" in e for e in errors["misspelled"]), errors["misspelled"]
    assert any("/spec/data/0/remoteRef/key: must be string" in e for e in errors["wrong type"]), errors["wrong type"]
