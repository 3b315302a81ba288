"""Production's payment on PostgreSQL (components/postgres, base/payment-database): how
many pods stay ready through a rollout and a node drain, computed from the rendered
strategy, PodDisruptionBudget and autoscaler; the protections on every object that holds
data; and the opt-in pieces (backups, switching another overlay) rendered for real."""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import tempfile

import pytest
import yaml

from tests.kube import REPO, find, kubectl, render
from tests.manifests.conftest import ENVIRONMENTS, containers, secret_file
from tests.manifests.test_crosschecks import pre_stop_seconds

pytestmark = pytest.mark.manifests

FLUX_KEEP = ("kustomize.toolkit.fluxcd.io/prune", "disabled")
ARGO_OPTIONS = "argocd.argoproj.io/sync-options"
# The kinds that hold charge attempts, or whose deletion deletes them.
STATEFUL_KINDS = {"Namespace", "PersistentVolumeClaim", "Cluster", "ObjectStore"}
MIN_READY = 2


def resolve(value, total: int, *, round_up: bool) -> int:
    """An intOrString of a Deployment strategy or a PDB, as the controllers resolve it."""
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * total / 100
    return math.ceil(share) if round_up else math.floor(share)


def ready_floor(objects: list[dict]) -> dict[str, int]:
    """The fewest ready payment pods, from the manifests alone, during a rollout and
    during one voluntary disruption (a drain evicting what the PDB lets it)."""
    deployment = find(objects, "Deployment", "payment", "payment")
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"
            and o["spec"]["scaleTargetRef"]["name"] == "payment"]
    if hpas:
        assert "replicas" not in deployment["spec"], "GitOps and the autoscaler would fight over it"
        replicas = hpas[0]["spec"]["minReplicas"]
    else:
        replicas = deployment["spec"].get("replicas", 1)
    strategy = deployment["spec"]["strategy"]
    if strategy["type"] == "Recreate":
        rollout = 0
    else:
        rolling = strategy.get("rollingUpdate", {})
        # Kubernetes rounds maxUnavailable down (and maxSurge up).
        rollout = replicas - resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"
            and o["metadata"]["namespace"] == "payment"
            and o["spec"]["selector"].get("matchLabels", {}).items() <= selector.items()]
    if not pdbs:
        drain = 0  # nothing stops a drain evicting every pod on the node, or all of them
    else:
        spec = pdbs[0]["spec"]
        if "maxUnavailable" in spec:
            drain = replicas - resolve(spec["maxUnavailable"], replicas, round_up=True)
        else:
            drain = resolve(spec["minAvailable"], replicas, round_up=True)
    return {"replicas": replicas, "rollout": rollout, "drain": drain}


def test_production_payment_never_drops_below_two_ready_pods():
    floor = ready_floor(render("overlays/production"))
    assert floor["replicas"] >= 3, floor
    assert floor["rollout"] >= MIN_READY and floor["drain"] >= MIN_READY, floor
    # ... and a drain is never blocked for good: the PDB allows one eviction at a time.
    assert floor["drain"] < floor["replicas"], floor


def test_the_floor_calculation_sees_a_bad_rollout_or_budget():
    """The same calculation on worse manifests: it can fail."""
    objects = render("overlays/production")
    deployment = find(objects, "Deployment", "payment", "payment")
    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "50%"
    assert ready_floor(objects)["rollout"] == 2  # 3 - floor(1.5)
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    assert ready_floor(objects)["rollout"] == 0
    find(objects, "PodDisruptionBudget", "payment", "payment")["spec"]["maxUnavailable"] = 2
    assert ready_floor(objects)["drain"] == 1
    assert ready_floor(render("overlays/staging")) == {"replicas": 1, "rollout": 0, "drain": 0}


def test_production_payment_spreads_and_drains_in_flight_charges():
    objects = render("overlays/production")
    pod = find(objects, "Deployment", "payment", "payment")["spec"]["template"]["spec"]
    keys = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(keys) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in keys.values():
        assert constraint["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "payment"}
    # Never two pods of one revision on a node while others have none.
    assert keys["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    hpa = find(objects, "HorizontalPodAutoscaler", "payment", "payment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # Every container outlives the endpoint removal: nginx keeps answering (and draining)
    # while the Service stops sending, and gunicorn outlives nginx (test_crosschecks.py
    # checks the order and the grace period).
    pod_containers = containers(find(objects, "Deployment", "payment", "payment"))
    assert [c["name"] for c in pod_containers] == ["payment", "proxy"]
    for container in pod_containers:
        assert pre_stop_seconds(container) >= 10, container["name"]


def projected_file(workload: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) behind the file at `path` of a projected volume of the first container."""
    pod = workload["spec"]["template"]["spec"]
    directory, _, filename = path.rpartition("/")
    [mount] = [m for m in containers(workload)[0]["volumeMounts"] if m["mountPath"] == directory]
    assert mount.get("readOnly") is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["projected"]["defaultMode"] == 0o440  # the pod's group only (fsGroup)
    [(secret, item)] = [(source["secret"]["name"], item) for source in volume["projected"]["sources"]
                        for item in source["secret"]["items"] if item["path"] == filename]
    return secret, item["key"]


def database_env(workload: dict) -> dict[str, str]:
    env = {e["name"]: e for e in containers(workload)[0]["env"]}
    # Nothing secret in the environment: not the URL, not a value from any Secret.
    assert "DATABASE_URL" not in env and not [e for e in env.values() if "valueFrom" in e]
    return {name: e["value"] for name, e in env.items()}


def test_production_payment_reads_the_operators_secret_from_files_and_verifies_the_server():
    objects = render("overlays/production")
    deployment = find(objects, "Deployment", "payment", "payment")
    cluster = find(objects, "Cluster", "payment-db", "payment")
    name = cluster["metadata"]["name"]
    env = database_env(deployment)
    # CloudNativePG names the application Secret <cluster>-app (its `uri` key: host
    # <cluster>-rw.<namespace>) and the cluster's CA Secret <cluster>-ca (key ca.crt).
    assert projected_file(deployment, env["DATABASE_URL_FILE"]) == (f"{name}-app", "uri")
    assert env["PGSSLMODE"] == "verify-full"
    assert projected_file(deployment, env["PGSSLROOTCERT"]) == (f"{name}-ca", "ca.crt")
    # Of the CA Secret only the certificate: its private key is never mounted.
    pod = deployment["spec"]["template"]["spec"]
    mounted = [(s["secret"]["name"], i["key"]) for v in pod["volumes"] if "projected" in v
               for s in v["projected"]["sources"] for i in s["secret"]["items"]]
    assert (f"{name}-ca", "ca.key") not in mounted
    # The operator makes the CA and the server certificate itself (none supplied), so
    # <cluster>-ca exists and the certificate names the -rw Service as <cluster>-rw,
    # <cluster>-rw.<ns> and <cluster>-rw.<ns>.svc, the second being the `uri` key's host.
    assert "certificates" not in cluster["spec"]
    # The secret key as a file from the Secret `payment-secrets`, never an environment value.
    assert "DJANGO_SECRET_KEY" not in env
    assert secret_file(deployment, env["DJANGO_SECRET_KEY_FILE"]) == ("payment-secrets", "django-secret-key")
    assert env["MIGRATE_ON_START"] == "false"
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if "persistentVolumeClaim" in v]


def test_the_database_is_three_instances_on_three_nodes():
    cluster = find(render("overlays/production"), "Cluster", "payment-db", "payment")
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    assert spec["affinity"]["topologyKey"] == "kubernetes.io/hostname"
    assert [c["topologyKey"] for c in spec["topologySpreadConstraints"]] == ["topology.kubernetes.io/zone"]
    assert ":" in spec["imageName"] and not spec["imageName"].endswith(":latest")


def test_the_migration_job_runs_the_deployed_image_and_is_no_endpoint():
    objects = render("overlays/production")
    job = find(objects, "Job", "payment-migrate", "payment")
    deployment = find(objects, "Deployment", "payment", "payment")
    assert containers(job)[0]["image"] == containers(deployment)[0]["image"]
    # The same database, server check and secret key as the app.
    job_env, app_env = database_env(job), database_env(deployment)
    for name in ("DATABASE_URL_FILE", "PGSSLROOTCERT"):
        assert projected_file(job, job_env[name]) == projected_file(deployment, app_env[name])
    assert job_env["PGSSLMODE"] == app_env["PGSSLMODE"] == "verify-full"
    assert secret_file(job, job_env["DJANGO_SECRET_KEY_FILE"]) == secret_file(
        deployment, app_env["DJANGO_SECRET_KEY_FILE"])
    # The Job's non-root user can read the file (group-readable, fsGroup set).
    assert job["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001
    # The Service must never send a charge to a migration pod.
    service = find(objects, "Service", "payment", "payment")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_stateful_object_survives_prune_and_deletion(env):
    objects = render(f"overlays/{env}")
    # payment's namespace and what is in it (Antaeus keeps no data: it reseeds at every start).
    stateful = [o for o in objects if o["kind"] in STATEFUL_KINDS
                and "payment" in (o["metadata"]["name"], o["metadata"].get("namespace"))]
    expected = {"Namespace"} | ({"Cluster"} if env == "production" else {"PersistentVolumeClaim"})
    assert {o["kind"] for o in stateful} == expected
    for obj in stateful:
        where = f"{env}: {obj['kind']}/{obj['metadata']['name']}"
        annotations = obj["metadata"].get("annotations", {})
        assert annotations.get(FLUX_KEEP[0]) == FLUX_KEEP[1], where
        options = annotations.get(ARGO_OPTIONS, "").split(",")
        assert {"Prune=false", "Delete=false"} <= set(options), where


def _render_with(resource: str, component: str, namespace: str) -> list[dict]:
    """Render `resource` with `component` switched on, as a user's overlay would."""
    with tempfile.TemporaryDirectory() as tmp:
        rel = os.path.relpath(REPO, tmp)
        pathlib.Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": namespace,
            "resources": [f"{rel}/{resource}"],
            "components": [f"{rel}/{component}"],
        }))
        run = subprocess.run([kubectl(), "kustomize", tmp], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def test_backup_component_archives_wal_and_schedules_base_backups():
    objects = _render_with("overlays/production/payment-database", "components/backup", "payment")
    cluster = find(objects, "Cluster", "payment-db", "payment")
    store = find(objects, "ObjectStore", "payment-db-backups", "payment")
    schedule = find(objects, "ScheduledBackup", "payment-db-daily", "payment")
    [plugin] = cluster["spec"]["plugins"]
    assert plugin["isWALArchiver"] is True
    assert plugin["parameters"]["barmanObjectName"] == store["metadata"]["name"]
    assert schedule["spec"]["cluster"]["name"] == "payment-db"
    assert schedule["spec"]["method"] == "plugin"
    assert schedule["spec"]["pluginConfiguration"]["name"] == plugin["name"]
    assert len(schedule["spec"]["schedule"].split()) == 6, "CloudNativePG's cron has seconds"
    assert store["metadata"]["annotations"][FLUX_KEEP[0]] == FLUX_KEEP[1]
    # The values a user must fill in are visibly placeholders, and no secret is inline.
    assert "CHANGE-ME" in store["spec"]["configuration"]["destinationPath"]
    for ref in store["spec"]["configuration"]["s3Credentials"].values():
        assert set(ref) == {"name", "key"}


def test_a_staging_overlay_switched_to_postgres_renders_like_production():
    """docs/deploy.md's recipe: the component on overlays/staging/payment."""
    objects = _render_with("overlays/staging/payment", "components/postgres", "payment")
    staged, produced = ready_floor(objects), ready_floor(render("overlays/production"))
    assert staged == produced
    deployment = find(objects, "Deployment", "payment", "payment")
    names = {e["name"] for e in containers(deployment)[0]["env"]}
    assert {"DATABASE_URL_FILE", "PGSSLMODE", "PGSSLROOTCERT", "DJANGO_SECRET_KEY_FILE", "MIGRATE_ON_START"} <= names


def test_the_database_part_carries_the_recommended_labels():
    expected = {"app.kubernetes.io/part-of": "antaeus-billing", "app.kubernetes.io/managed-by": "kustomize",
                "app.kubernetes.io/instance": "payment-production"}
    for obj in render("overlays/production/payment-database"):
        labelled = [obj["metadata"]] + ([obj["spec"]["template"]["metadata"]] if obj["kind"] == "Job" else [])
        for meta in labelled:
            labels = meta.get("labels", {})
            assert expected.items() <= labels.items(), (obj["kind"], labels)
            assert labels["app.kubernetes.io/name"] and labels["app.kubernetes.io/component"], labels


def test_probes_mean_the_same_on_both_database_modes():
    """components/postgres changes how payment runs, not what its probes ask."""
    def probes(env):
        container = containers(find(render(f"overlays/{env}"), "Deployment", "payment", "payment"))[0]
        return {name: container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")}

    assert probes("staging") == probes("production")
