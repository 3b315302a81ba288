"""The edges of the two environments and the operator access around them (issue 15):
production's Ingress (TLS from cert-manager, authentication at the edge, HTTPS only),
staging's open LoadBalancer and its source-range knob, the infrastructure that serves
them (cert-manager, its ClusterIssuer, oauth2-proxy) validated by maintained models, the
optional admin-credentials component, and the Pod Security version pins."""

from __future__ import annotations

import copy
import ipaddress
import os
import pathlib
import re
import tempfile
import textwrap
import urllib.parse

import kubernetes_validate.utils as kv
import pydantic
import pytest
import yaml

from tests.isolation.rbac import Authorizer, Request, Subject
from tests.manifests.test_custom_resources import check
from tests.kube import REPO, find, render, render_text
from tests.manifests.conftest import ENVIRONMENTS, is_built_in
from tests.models import MODELS, validate_strictly

pytestmark = pytest.mark.manifests

DOC = REPO / "docs" / "deploy.md"
INFRASTRUCTURE = ("infrastructure/staging/controllers", "infrastructure/production/controllers",
                  "infrastructure/configs", "infrastructure/auth")
COMPONENT = "components/admin-credentials"

# Kinds checked by the npm model packages (test_custom_resources.py) rather than by a
# PyPI model: the External Secrets Operator has none on PyPI.
NPM_CHECKED = {("external-secrets.io/v1", "ExternalSecret")}
CORE_VERSION = "1.30"


def production_ingresses() -> list[dict]:
    ingresses = [o for o in render("overlays/production") if o["kind"] == "Ingress"]
    assert ingresses, "production has no Ingress"
    return ingresses


def oauth2_proxy_release() -> dict:
    return find(render("infrastructure/auth"), "HelmRelease", "oauth2-proxy", "flux-system")


def render_with(resource: str, *, components: list[str] = (), patches: list[dict] = ()) -> list[dict]:
    """Render `resource` (a kustomization of the repo) wrapped in a throwaway kustomization
    that adds components and patches, as a user's one-line change would."""
    with tempfile.TemporaryDirectory(prefix="kustomize-") as tmp:
        rel = lambda path: os.path.relpath(REPO / path, tmp)  # kustomize refuses absolute paths
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [rel(resource)],
            **({"components": [rel(c) for c in components]} if components else {}),
            **({"patches": list(patches)} if patches else {}),
        }
        pathlib.Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return [d for d in yaml.safe_load_all(render_text(os.path.relpath(tmp, REPO))) if d]


# --- production: TLS, authentication, HTTPS only -----------------------------------------

def check_tls(ingresses: list[dict]) -> None:
    issuers = {(o["kind"], o["metadata"]["name"]) for o in render("infrastructure/configs")}
    for ingress in ingresses:
        name, annotations = ingress["metadata"]["name"], ingress["metadata"].get("annotations", {})
        tls = ingress["spec"].get("tls")
        assert tls, f"{name}: no tls"
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        assert all(entry.get("secretName") for entry in tls), f"{name}: tls without a secretName"
        assert hosts <= {h for entry in tls for h in entry.get("hosts", [])}, f"{name}: a host without TLS"
        issuer = [(kind, annotations[key]) for key, kind in (
            ("cert-manager.io/cluster-issuer", "ClusterIssuer"), ("cert-manager.io/issuer", "Issuer"),
        ) if annotations.get(key)]
        assert len(issuer) == 1, f"{name}: needs exactly one cert-manager issuer annotation, has {issuer}"
        # The placeholder issuer the annotation names is the one this repository ships.
        assert issuer[0] in issuers, f"{name}: {issuer[0]} is not in infrastructure/configs"


def check_redirect_and_auth(ingresses: list[dict]) -> None:
    release = oauth2_proxy_release()
    service_host = f"{release['spec']['releaseName']}.{release['spec']['targetNamespace']}.svc.cluster.local"
    for ingress in ingresses:
        name, annotations = ingress["metadata"]["name"], ingress["metadata"].get("annotations", {})
        assert annotations.get("nginx.ingress.kubernetes.io/force-ssl-redirect") == "true", name
        assert annotations.get("nginx.ingress.kubernetes.io/ssl-redirect", "true") == "true", name
        auth_url = urllib.parse.urlsplit(annotations.get("nginx.ingress.kubernetes.io/auth-url", ""))
        # The in-cluster oauth2-proxy Service of infrastructure/auth, at its auth endpoint.
        assert (auth_url.hostname, auth_url.path) == (service_host, "/oauth2/auth"), f"{name}: {auth_url}"
        signin = annotations.get("nginx.ingress.kubernetes.io/auth-signin", "")
        assert signin.startswith("https://$host/oauth2/start"), f"{name}: {signin!r}"
        # Nothing routed around the check: no path of the Ingress opts out of it.
        assert "nginx.ingress.kubernetes.io/enable-global-auth" not in annotations, name


def test_oauth2_proxy_serves_the_production_host_and_only_answers_auth_requests():
    values = oauth2_proxy_release()["spec"]["values"]
    hosts = {rule["host"] for ingress in production_ingresses() for rule in ingress["spec"]["rules"]}
    assert values["ingress"]["enabled"] is True and values["ingress"]["path"] == "/oauth2"
    assert set(values["ingress"]["hosts"]) == hosts, "patch the host in both places (docs/deploy.md)"
    assert values["extraArgs"]["whitelist-domain"] in hosts
    assert values["extraArgs"]["cookie-secure"] is True
    # The credentials come from a Secret created out of git, never from values.
    assert values["config"]["existingSecret"] and not {"clientID", "clientSecret", "cookieSecret"} & set(values["config"])
    # It never proxies to Antaeus: the only upstream is a static 202 for auth requests.
    assert "static://202" in values["config"]["configFile"]


def test_every_production_ingress_terminates_tls_with_a_cert_manager_certificate():
    check_tls(production_ingresses())


def test_every_production_ingress_redirects_http_and_authenticates_every_request():
    check_redirect_and_auth(production_ingresses())


@pytest.mark.parametrize("path, check, match", [
    (("spec", "tls"), check_tls, "no tls"),
    (("metadata", "annotations", "cert-manager.io/cluster-issuer"), check_tls, "issuer annotation"),
    (("metadata", "annotations", "nginx.ingress.kubernetes.io/auth-url"), check_redirect_and_auth, "antaeus"),
    (("metadata", "annotations", "nginx.ingress.kubernetes.io/force-ssl-redirect"), check_redirect_and_auth, "antaeus"),
])
def test_the_checks_fail_on_an_ingress_missing_a_piece(path, check, match):
    broken = copy.deepcopy(production_ingresses())
    *parents, last = path
    target = broken[0]
    for key in parents:
        target = target[key]
    del target[last]
    with pytest.raises(AssertionError, match=match):
        check(broken)


# --- staging: open by design, one knob ----------------------------------------------------

def load_balancers(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"]


def test_staging_load_balancer_states_its_source_ranges():
    services = load_balancers(render("overlays/staging"))
    assert [s["metadata"]["name"] for s in services] == ["antaeus-public"]
    for service in services:
        ranges = service["spec"].get("loadBalancerSourceRanges")
        assert ranges, f"{service['metadata']['name']}: the knob must be written out"
        for cidr in ranges:
            ipaddress.ip_network(cidr)  # raises on anything but a CIDR block
        # Open by design (docs/deploy.md says so): the challenge's check runs from anywhere.
        assert ranges == ["0.0.0.0/0"]
    assert not load_balancers(render("overlays/production")), "production is reached through its Ingress only"


def documented_source_range_patch() -> dict:
    blocks = [yaml.safe_load(textwrap.dedent(b)) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]
    [patch] = [b for b in blocks if isinstance(b, dict) and "loadBalancerSourceRanges" in str(b)]
    return patch


def test_the_documented_knob_narrows_the_staging_load_balancer():
    documented = documented_source_range_patch()
    [op] = yaml.safe_load(documented["patches"][0]["patch"])
    objects = render_with("overlays/staging/antaeus", patches=documented["patches"])
    [service] = load_balancers(objects)
    assert service["spec"]["loadBalancerSourceRanges"] == op["value"] != ["0.0.0.0/0"]
    for cidr in op["value"]:
        assert not ipaddress.ip_network(cidr).is_unspecified


# --- custom resources, validated like the rest --------------------------------------------

def validate(obj: dict) -> str | None:
    """Validate one object; return the reason when no engine covers its kind."""
    key = (obj["apiVersion"], obj["kind"])
    if key in MODELS:
        validate_strictly(obj)
        return None
    if key in NPM_CHECKED:
        [verdict] = check([obj])
        assert verdict["model"] and not verdict["errors"], verdict
        return None
    assert is_built_in(obj), f"{key}: a custom resource with no model; add one to tests/models.py"
    kv.validate(obj, CORE_VERSION, strict=True)
    return None


@pytest.mark.parametrize("path", INFRASTRUCTURE)
def test_infrastructure_objects_validate(path):
    objects = render(path)
    assert objects
    for obj in objects:
        assert validate(obj) is None, f"{obj['kind']}: not validated"


def test_the_models_reject_unknown_fields():
    release = copy.deepcopy(oauth2_proxy_release())
    release["spec"]["chart"]["spec"]["verison"] = "1.0.0"
    with pytest.raises(pydantic.ValidationError, match="verison"):
        validate(release)
    issuer = copy.deepcopy(find(render("infrastructure/configs"), "ClusterIssuer", "letsencrypt-production"))
    issuer["spec"]["acme"]["sever"] = "https://example.com"
    with pytest.raises(pydantic.ValidationError, match="sever"):
        validate(issuer)


def test_charts_are_pinned_to_a_version():
    for path in INFRASTRUCTURE:
        for release in (o for o in render(path) if o["kind"] == "HelmRelease"):
            version = release["spec"]["chart"]["spec"].get("version", "")
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", version), f"{release['metadata']['name']}: {version!r}"


def test_external_secret_component_is_checked():
    objects = render_with("overlays/production/payment", components=[COMPONENT])
    [external] = [o for o in objects if o["kind"] == "ExternalSecret"]
    assert validate(external) is None  # the npm model, unknown fields refused
    # What the Deployment relies on: the Secret's name and the two keys it reads as files.
    secret, _mount, files = admin_secret_volume(find(objects, "Deployment", "payment", "payment"))
    refs = {(secret["secretName"], key) for key in files}
    spec = external["spec"]
    assert set(spec) <= {"refreshInterval", "secretStoreRef", "target", "data", "dataFrom"}
    assert spec["secretStoreRef"]["kind"] in ("SecretStore", "ClusterSecretStore") and spec["secretStoreRef"]["name"]
    assert {(spec["target"]["name"], d["secretKey"]) for d in spec["data"]} == refs
    assert all(set(d["remoteRef"]) <= {"key", "property", "version"} and d["remoteRef"]["key"] for d in spec["data"])


# --- admin credentials: optional Secret, allowed kinds, nothing more -----------------------

def admin_secret_volume(deployment: dict) -> tuple[dict, str, set[str]]:
    """The admin Secret volume of the payment pod, where it is mounted, and the keys the
    *_FILE variables read from it."""
    pod = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "payment-admin"]
    container = pod["containers"][0]
    [mount] = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume["name"]]
    files = {e["value"] for e in container.get("env", []) if e["name"].startswith("DJANGO_SUPERUSER_")}
    assert all(f.startswith(mount + "/") for f in files), files
    return volume["secret"], mount, {f.removeprefix(mount + "/") for f in files}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_admin_credentials_are_optional_files_so_apply_works_with_no_secret(env):
    deployment = find(render(f"overlays/{env}/payment"), "Deployment", "payment", "payment")
    secret, _mount, keys = admin_secret_volume(deployment)
    assert secret["optional"] is True
    assert keys == {"username", "password"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # Files, not environment variables: nothing secret in the process environment (the
    # database URL on PostgreSQL too: DATABASE_URL_FILE, test_postgres.py).
    assert [e["name"] for e in container.get("env", []) if "valueFrom" in e] == []
    assert not [s for s in container.get("envFrom", []) if "secretRef" in s]


def test_reconciler_and_app_project_allow_the_component_and_no_secrets():
    objects = render_with("overlays/production/payment", components=[COMPONENT])
    authorizer = Authorizer(render("overlays/production"))
    reconciler = Subject.service_account("payment", "flux-reconciler")
    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert authorizer.allowed(reconciler, Request.parse(verb, "externalsecrets.external-secrets.io", "payment"))
        assert not authorizer.allowed(reconciler, Request.parse(verb, "secrets", "payment"))
        other = Subject.service_account("antaeus", "flux-reconciler")
        assert not authorizer.allowed(other, Request.parse(verb, "externalsecrets.external-secrets.io", "antaeus"))
    project = find(render("argocd/production"), "AppProject", "antaeus-billing")
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for obj in objects:
        assert (obj["apiVersion"].rpartition("/")[0], obj["kind"]) in allowed, obj["kind"]
    assert ("", "Secret") not in allowed


# --- break-glass: a group, bound to nobody by name, production only -------------------------

@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_break_glass_is_a_group_of_production_only(env):
    bindings = [o for o in render(f"overlays/{env}") if o["kind"] == "RoleBinding"]
    subjects = [s for b in bindings for s in b["subjects"]]
    assert not [s for s in subjects if s["kind"] == "User"], "rights go to groups, never to a named person"
    break_glass = [b for b in bindings if {"kind": "Group", "name": "payment-break-glass",
                                          "apiGroup": "rbac.authorization.k8s.io"} in b["subjects"]]
    if env == "production":
        assert [(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in break_glass] == [
            ("payment", "antaeus-billing-break-glass")]
        assert break_glass[0]["subjects"] == [{"kind": "Group", "name": "payment-break-glass",
                                               "apiGroup": "rbac.authorization.k8s.io"}]
    else:
        assert not break_glass


# --- Pod Security: a pinned version, never `latest` ----------------------------------------

@pytest.mark.parametrize("path", ["overlays/staging", "overlays/production", *INFRASTRUCTURE])
def test_pod_security_labels_name_a_pinned_version(path):
    namespaces = [o for o in render(path) if o["kind"] == "Namespace"]
    for ns in namespaces:
        labels = ns["metadata"].get("labels", {})
        modes = [k for k in labels if re.fullmatch(r"pod-security\.kubernetes\.io/(enforce|warn|audit)", k)]
        assert modes, f"{ns['metadata']['name']}: no Pod Security level"
        for mode in modes:
            version = labels.get(f"{mode}-version")
            assert version and re.fullmatch(r"v1\.\d+", version), f"{ns['metadata']['name']}: {mode}-version {version!r}"


def test_the_documented_audit_policy_covers_the_break_glass_group():
    text = (REPO / "docs" / "isolation.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    [policy] = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "Policy"]
    assert policy["apiVersion"] == "audit.k8s.io/v1"
    levels = {"None", "Metadata", "Request", "RequestResponse"}
    assert all(rule["level"] in levels for rule in policy["rules"])
    bound = {s["name"] for b in render("overlays/production") if b["kind"] == "RoleBinding"
             for s in b["subjects"] if s["kind"] == "Group" and "break-glass" in s["name"]}
    audited = {g for rule in policy["rules"] if rule["level"] != "None" for g in rule.get("userGroups", [])}
    assert bound and bound <= audited

