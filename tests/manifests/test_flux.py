"""The Flux entry points: what `flux bootstrap --path clusters/<env>` picks up and what that
leads to, validated with cloudcoil-models-fluxcd (unknown fields rejected)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import pydantic
import pytest
import yaml

from tests.kube import REPO, cluster_manifests, find, is_bootstrap, render
from tests.models import validate_strictly
from tests.manifests.conftest import ENVIRONMENTS, PART_NAMESPACES, SERVICES, is_built_in, parts

pytestmark = pytest.mark.manifests

FLUX_GROUPS = ("kustomize.toolkit.fluxcd.io/", "source.toolkit.fluxcd.io/", "helm.toolkit.fluxcd.io/")


def bootstrap_objects(env: str) -> list[dict]:
    """The Flux objects the bootstrap's flux-system Kustomization applies."""
    return [obj for obj in cluster_manifests(env) if obj.get("apiVersion", "").startswith(FLUX_GROUPS)]


def flux_kustomizations(env: str, *, with_bootstrap: bool = False) -> dict[tuple[str, str], dict]:
    """Every Flux Kustomization that ends up in the cluster, by (namespace, name): those
    bootstrap applies and, recursively, those in the paths they apply."""
    found: dict[tuple[str, str], dict] = {}
    pending = [
        o for o in bootstrap_objects(env)
        if o["kind"] == "Kustomization" and (with_bootstrap or not is_bootstrap(o))
    ]
    while pending:
        ks = pending.pop()
        key = (ks["metadata"]["namespace"], ks["metadata"]["name"])
        assert key not in found, f"{key} defined twice"
        found[key] = ks
        if is_bootstrap(ks):
            continue
        pending += [
            o for o in render(path_of(ks))
            if o["apiVersion"].startswith(FLUX_GROUPS) and o["kind"] == "Kustomization"
        ]
    return found


def path_of(ks: dict) -> str:
    path = ks["spec"]["path"]
    assert path.startswith("./"), f"{ks['metadata']['name']}: path {path!r} must start with ./"
    return path.removeprefix("./")


def seconds(duration: str) -> int:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a Go duration Flux accepts here: {duration!r}"
    h, m, s = (int(x or 0) for x in parts.groups())
    return h * 3600 + m * 60 + s


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def env(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def kustomizations(env) -> dict[tuple[str, str], dict]:
    return flux_kustomizations(env)


def test_flux_objects_validate_with_no_unknown_fields(env, kustomizations):
    objects = bootstrap_objects(env) + list(kustomizations.values())
    # And the Flux objects the Kustomizations apply (the operators' sources and releases).
    objects += [
        o for ks in kustomizations.values() for o in render(path_of(ks))
        if o["apiVersion"].startswith(FLUX_GROUPS) and o["kind"] != "Kustomization"
    ]
    assert {o["kind"] for o in objects} >= {"Kustomization", "HelmRepository", "HelmRelease"}
    assert all(not is_bootstrap(ks) for ks in kustomizations.values())
    for obj in objects:
        validate_strictly(obj)


def test_strict_validation_rejects_unknown_fields():
    ks = copy.deepcopy(next(iter(flux_kustomizations("staging").values())))
    validate_strictly(ks)
    ks["spec"]["healthcheck"] = []  # a typo of healthChecks
    with pytest.raises(pydantic.ValidationError, match="healthcheck"):
        validate_strictly(ks)


# The infrastructure layers of each environment beside the operators: the operators'
# custom resources everywhere, the edge's authentication gate in production only.
INFRASTRUCTURE_LAYERS = {
    "staging": {"infrastructure/configs": "infrastructure-configs"},
    "production": {"infrastructure/configs": "infrastructure-configs", "infrastructure/auth": "infrastructure-auth"},
}


def test_each_environment_deploys_its_layers(env, kustomizations):
    paths = {path_of(ks): key for key, ks in kustomizations.items()}
    assert paths == {
        f"infrastructure/{env}/controllers": ("flux-system", "infrastructure"),
        **{path: ("flux-system", name) for path, name in INFRASTRUCTURE_LAYERS[env].items()},
        f"overlays/{env}/platform": ("flux-system", "platform"),
        f"tenants/{env}": ("flux-system", "tenants"),
        **{f"overlays/{env}/{part}": (PART_NAMESPACES[part], part) for part in parts(env)},
    }


def test_tenants_differ_between_environments_only_in_path():
    """One base per service and a path patch per environment (Flux's multi-tenancy layout)."""
    def without_path(env):
        found = {}
        for ks in render(f"tenants/{env}"):
            assert ks["spec"]["path"].startswith(f"./overlays/{env}/"), ks["spec"]["path"]
            del ks["spec"]["path"]
            found[ks["metadata"]["name"]] = ks
        return found

    staging, production = without_path("staging"), without_path("production")
    assert set(staging) == set(SERVICES)
    for name in SERVICES:
        if name == "payment":
            # Production's payment also waits for its database (components/postgres/tenant).
            production[name]["spec"]["dependsOn"].remove({"name": "payment-database"})
        assert staging[name] == production[name], name
    assert "path" not in render("tenants/base")[0]["spec"], "the base names no environment"


# Cluster add-ons that define no custom resources.
CHARTS_WITHOUT_CRDS = {"ingress-nginx", "metrics-server"}


def test_operators_are_installed_before_any_custom_resource_is_applied(env, kustomizations):
    infrastructure = kustomizations[("flux-system", "infrastructure")]
    assert infrastructure["spec"]["wait"] is True
    # Every operator is a pinned chart release, whose CRDs it installs and upgrades.
    releases = [o for o in render(path_of(infrastructure)) if o["kind"] == "HelmRelease"]
    assert releases
    for release in releases:
        chart = release["spec"]["chart"]["spec"]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", chart["version"]), chart
        values = release["spec"].get("values", {})
        if "crds" in values:
            # Charts that template their CRDs (cert-manager): installed by the chart and
            # kept when the release goes, so removing it never deletes every object.
            assert values["crds"] == {"enabled": True, "keep": True}, release["metadata"]["name"]
        elif release["spec"]["chart"]["spec"]["chart"] in CHARTS_WITHOUT_CRDS:
            assert "crds" not in release["spec"]["install"], "nothing to create"
        else:
            # Charts with a crds/ folder: Helm skips those on upgrade unless told.
            assert release["spec"]["install"]["crds"] == release["spec"]["upgrade"]["crds"] == "CreateReplace"
        assert chart["sourceRef"]["kind"] == "HelmRepository"
    # Whatever applies a custom resource depends on the infrastructure layer, directly or
    # through a layer that does.
    for key, ks in kustomizations.items():
        if key[1] in ("infrastructure", "platform", "tenants"):
            continue
        if any(not is_built_in(o) for o in render(path_of(ks))):
            assert ("flux-system", "infrastructure") in dependencies(kustomizations, key), key
    tenants = kustomizations[("flux-system", "tenants")]
    assert {"name": "infrastructure"} in tenants["spec"]["dependsOn"]


def dependencies(kustomizations: dict[tuple[str, str], dict], key: tuple[str, str]) -> set[tuple[str, str]]:
    """Every Kustomization `key` waits for, directly or through others."""
    found, pending = set(), [key]
    while pending:
        namespace, name = pending.pop()
        for dep in kustomizations[(namespace, name)]["spec"].get("dependsOn", []):
            target = (dep.get("namespace", namespace), dep["name"])
            if target not in found:
                found.add(target)
                pending.append(target)
    return found


def test_infrastructure_layers_are_chained_and_waited_on(env, kustomizations):
    """controllers -> configs (-> auth, production) -> tenants: each layer is applied only
    once the one before is ready, and is itself waited on."""
    chain = ["infrastructure", *INFRASTRUCTURE_LAYERS[env].values()]
    for before, after in zip(chain, chain[1:]):
        ks = kustomizations[("flux-system", after)]
        assert {"name": before} in ks["spec"]["dependsOn"], f"{after} does not wait for {before}"
    for name in chain:
        assert kustomizations[("flux-system", name)]["spec"]["wait"] is True, name
    tenants = dependencies(kustomizations, ("flux-system", "tenants"))
    assert {("flux-system", name) for name in chain} <= tenants
    # The issuer is a custom resource of cert-manager: never in the operators' own layer.
    assert not [o for o in render("infrastructure/controllers") if o["apiVersion"].startswith("cert-manager.io/")]
    # Staging is open by design: no authentication gate there.
    if env == "staging":
        assert not [ks for ks in kustomizations.values() if path_of(ks) == "infrastructure/auth"]


def test_migrations_run_before_the_app_rolls_out():
    """Production's payment waits for payment-database: the Cluster is ready and the
    migration Job has completed (wait: true) before new payment pods start."""
    found = flux_kustomizations("production")
    database, payment = found[("payment", "payment-database")], found[("payment", "payment")]
    assert {"name": "payment-database"} in payment["spec"]["dependsOn"]
    assert database["spec"]["wait"] is True
    objects = render(path_of(database))
    assert sorted(o["kind"] for o in objects) == ["Cluster", "Job", "ServiceAccount"]
    job = find(objects, "Job", "payment-migrate", "payment")
    # The Job's account comes in the same step: `payment`'s comes only after it
    # (tests/cluster shows the refused pods otherwise).
    account = find(objects, "ServiceAccount", "payment-migrate", "payment")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    # A Job's pod template is immutable: Flux re-creates it when the image changes.
    assert job["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/force"] == "enabled"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python", "manage.py", "migrate_locked", "--noinput"]
    # Staging, on SQLite, migrates at start as before: no Job, no database Kustomization.
    assert ("payment", "payment-database") not in flux_kustomizations("staging")


def test_kustomization_settings(env, kustomizations):
    for (namespace, name), ks in kustomizations.items():
        spec, where = ks["spec"], f"{namespace}/{name}"
        assert ks["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
        assert spec["sourceRef"] == {
            "kind": "GitRepository",
            "name": "flux-system",
            **({} if namespace == "flux-system" else {"namespace": "flux-system"}),
        }, f"{where}: not the bootstrap's GitRepository"
        assert spec["prune"] is True, where
        assert seconds(spec["interval"]) > 0 and seconds(spec["timeout"]) > 0, where
        assert (REPO / path_of(ks)).is_dir(), f"{where}: {spec['path']} does not exist"
        objects = render(path_of(ks))
        if spec.get("wait") is not True and not spec.get("healthChecks"):
            # Only a Kustomization that applies nothing but other Flux Kustomizations (each
            # reporting its own health) may skip waiting.
            assert all(o["kind"] == "Kustomization" for o in objects), f"{where} waits for nothing"
            assert all(o["spec"].get("wait") is True for o in objects), where


def test_dependencies_exist_and_order_namespaces_first(env, kustomizations):
    for (namespace, name), ks in kustomizations.items():
        for dep in ks["spec"].get("dependsOn", []):
            target = (dep.get("namespace", namespace), dep["name"])
            assert target in kustomizations, f"{namespace}/{name} depends on missing {target}"
    platform_objects = render(f"overlays/{env}/platform")
    created = {o["metadata"]["name"] for o in platform_objects if o["kind"] == "Namespace"}
    # bootstrap applies clusters/<env>/ as one unit, before anything else exists: a
    # Kustomization placed in a service namespace there would fail it as a whole.
    for obj in bootstrap_objects(env):
        assert obj["metadata"]["namespace"] == "flux-system", obj["metadata"]["name"]
    tenants = kustomizations[("flux-system", "tenants")]
    assert {"name": "platform"} in tenants["spec"]["dependsOn"]
    for obj in render(path_of(tenants)):
        assert obj["metadata"]["namespace"] in created, "its namespace comes from platform"


def _tenant_cases():
    return [pytest.param(env, part, id=f"{env}-{part}") for env in ENVIRONMENTS for part in parts(env)]


@pytest.mark.parametrize(("env", "part"), _tenant_cases())
def test_services_are_applied_with_their_namespace_reconciler(env, part):
    service = PART_NAMESPACES[part]
    ks = flux_kustomizations(env)[(service, part)]
    assert ks["spec"]["serviceAccountName"] == "flux-reconciler"
    assert {"name": "platform", "namespace": "flux-system"} in ks["spec"]["dependsOn"]
    platform = render(f"overlays/{env}/platform")
    find(platform, "ServiceAccount", "flux-reconciler", service)
    bound = [
        b for b in platform
        if b["kind"] == "RoleBinding" and b["metadata"]["namespace"] == service
        and {"kind": "ServiceAccount", "name": "flux-reconciler", "namespace": service}
        in b.get("subjects", [])
    ]
    assert bound, f"no RoleBinding gives {service}/flux-reconciler any rights"


def test_antaeus_health_wait_outlasts_its_startup(env, kustomizations):
    deployment = find(render(f"overlays/{env}/antaeus"), "Deployment", "antaeus", "antaeus")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    startup = probe["periodSeconds"] * probe["failureThreshold"]
    assert deployment["spec"]["progressDeadlineSeconds"] >= startup
    assert seconds(kustomizations[("antaeus", "antaeus")]["spec"]["timeout"]) > startup


def test_argo_cd_folder_is_outside_every_flux_path(env, kustomizations):
    for ks in kustomizations.values():
        assert not path_of(ks).startswith("argocd")
    assert not (REPO / "clusters" / env / "argocd").exists()


PLURALS = {"Ingress": "ingresses"}
APPLY_VERBS = {"get", "list", "create", "patch", "delete"}  # server-side apply and prune


@pytest.mark.parametrize(("env", "part"), _tenant_cases())
def test_reconciler_may_apply_and_prune_everything_in_its_path(env, part):
    service = PART_NAMESPACES[part]
    ks = flux_kustomizations(env)[(service, part)]
    platform = render(f"overlays/{env}/platform")
    subject = {"kind": "ServiceAccount", "name": "flux-reconciler", "namespace": service}
    rules = []
    for binding in platform:
        if binding["kind"] != "RoleBinding" or binding["metadata"]["namespace"] != service:
            continue
        if subject not in binding.get("subjects", []):
            continue
        ref = binding["roleRef"]
        role_kind = ref["kind"]
        role = find(platform, role_kind, ref["name"], service if role_kind == "Role" else None)
        rules += role["rules"]
    for obj in render(path_of(ks)):
        group = obj["apiVersion"].rpartition("/")[0]
        resource = PLURALS.get(obj["kind"], obj["kind"].lower() + "s")
        granted = set()
        for rule in rules:
            if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
                granted |= set(rule["verbs"])
        missing = APPLY_VERBS - granted
        assert not missing, f"{service}/flux-reconciler lacks {sorted(missing)} on {group}/{resource}"


def test_each_environment_pins_its_own_chart_versions_over_one_shared_base(tmp_path):
    """A chart upgrade is one line in staging's file (tried there first) and a second in
    production's; a change to the shared releases (values, sources) reaches both."""
    staging, production = (render(f"infrastructure/{env}/controllers") for env in ("staging", "production"))
    for rendered in (staging, production):
        releases = [o for o in rendered if o["kind"] == "HelmRelease"]
        assert releases and all(re.fullmatch(r"v?\d+\.\d+\.\d+", r["spec"]["chart"]["spec"]["version"]) for r in releases)
    shared = [o for o in render("infrastructure/controllers") if o["kind"] == "HelmRelease"]
    assert all("version" not in r["spec"]["chart"]["spec"] for r in shared), "versions live per environment"

    # On a copy of the tree: an upgrade in staging's file changes staging only ...
    copy_root = tmp_path / "infrastructure"
    shutil.copytree(REPO / "infrastructure", copy_root)

    def build(env):
        out = subprocess.run(["kubectl", "kustomize", str(copy_root / env / "controllers")],
                             capture_output=True, text=True, check=True).stdout
        return {o["metadata"]["name"]: o for o in yaml.safe_load_all(out) if o and o["kind"] == "HelmRelease"}

    versions = copy_root / "staging" / "controllers" / "chart-versions.yaml"
    before = build("staging")["metrics-server"]["spec"]["chart"]["spec"]["version"]
    versions.write_text(versions.read_text().replace(f"version: {before}", "version: 99.0.0")
                        .replace(f'version: "{before}"', 'version: "99.0.0"'))
    assert build("staging")["metrics-server"]["spec"]["chart"]["spec"]["version"] == "99.0.0"
    assert build("production")["metrics-server"]["spec"]["chart"]["spec"]["version"] == before
    # ... and a change to the shared release reaches both environments.
    shared_file = copy_root / "controllers" / "metrics-server.yaml"
    shared_file.write_text(shared_file.read_text().replace("    replicas: 2\n", "    replicas: 3\n"))
    assert {build(env)["metrics-server"]["spec"]["values"]["replicas"] for env in ("staging", "production")} == {3}
