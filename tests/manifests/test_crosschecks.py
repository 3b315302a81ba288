"""Cross-checks between the payment service's code and the manifests, and between the
manifests themselves: URLs, routes, hosts, probes, labels, selectors, Pod Security."""

from __future__ import annotations

import re
import runpy
import urllib.parse

import pytest
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, resolve

from tests.kube import REPO, find, render
from tests.manifests.conftest import SERVICES, containers
from harness.server import CLUSTER_ALLOWED_HOSTS

pytestmark = pytest.mark.manifests

COMPONENTS = {"antaeus": "billing", "payment": "payment-provider"}


@pytest.fixture
def objects(env_objects) -> list[dict]:
    return env_objects


def container_env(objects: list[dict], deployment: dict) -> dict[str, str]:
    """The environment a Deployment's first container gets from ConfigMaps and `env`; a
    value read from a Secret shows as `secret:<name>/<key>` (its value is not in git)."""
    namespace = deployment["metadata"]["namespace"]
    container = containers(deployment)[0]
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"unexpected envFrom {source}"
        values |= find(objects, "ConfigMap", source["configMapRef"]["name"], namespace)["data"]
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            values[item["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return values


def pods_selected(objects: list[dict], service: dict) -> list[dict]:
    selector = service["spec"]["selector"]
    return [
        o for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["namespace"] == service["metadata"]["namespace"]
        and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
    ]


def allowed_hosts(objects: list[dict]) -> list[str]:
    payment = find(objects, "Deployment", "payment", "payment")
    return container_env(objects, payment)["DJANGO_ALLOWED_HOSTS"].split(",")


def host_allowed(host: str, allowed: list[str]) -> bool:
    # What Django's request.get_host() does: validate the host without its port.
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def nginx_text(objects: list[dict], deployment: dict) -> str:
    """The nginx.conf the proxy container mounts, as rendered."""
    (proxy,) = [c for c in containers(deployment) if c["name"] == "proxy"]
    (mount,) = [m for m in proxy["volumeMounts"] if m["mountPath"] == "/etc/nginx/nginx.conf"]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    config = find(objects, "ConfigMap", volume["configMap"]["name"], deployment["metadata"]["namespace"])
    return config["data"][mount["subPath"]]


def nginx_ports(objects: list[dict], deployment: dict) -> tuple[int, int]:
    """The port nginx listens on and the gunicorn port it proxies to."""
    text = nginx_text(objects, deployment)
    (listen,) = re.findall(r"^\s*listen (\d+);", text, re.MULTILINE)
    (upstream,) = re.findall(r"^\s*server 127\.0\.0\.1:(\d+);", text, re.MULTILINE)
    return int(listen), int(upstream)


def resolve_target_port(deployment: dict, target_port) -> int:
    for container in containers(deployment):
        for port in container.get("ports", []):
            if target_port in (port.get("name"), port["containerPort"]):
                return port["containerPort"]
    raise AssertionError(f"targetPort {target_port!r} matches no container port")


# --- Antaeus -> payment ------------------------------------------------------------------

def test_antaeus_endpoint_reaches_the_charge_route(objects):
    antaeus = find(objects, "Deployment", "antaeus", "antaeus")
    url = urllib.parse.urlsplit(container_env(objects, antaeus)["PAYMENT_PROVIDER_ENDPOINT"])
    assert url.scheme == "http" and not url.query and not url.fragment
    # <service>.<namespace>.svc.cluster.local -> the payment Service
    service_name, namespace, svc, *_ = url.hostname.split(".")
    assert svc == "svc"
    service = find(objects, "Service", service_name, namespace)
    [port] = [p for p in service["spec"]["ports"] if p["port"] == (url.port or 80)]
    [deployment] = pods_selected(objects, service)
    assert deployment["metadata"]["name"] == "payment"
    container_port = resolve_target_port(deployment, port["targetPort"])
    # The Service reaches nginx, which passes requests to gunicorn on $PORT (gunicorn.conf.py).
    listen, upstream = nginx_ports(objects, deployment)
    assert listen == container_port
    assert str(upstream) == container_env(objects, deployment)["PORT"]
    # The path is a real route of the service, the charge view.
    assert resolve(url.path).url_name == "charge-create"
    # And the Host header Antaeus sends (with the port) passes Django's host validation.
    assert host_allowed(url.netloc, allowed_hosts(objects)), url.netloc


def test_resolve_really_rejects_a_wrong_path():
    with pytest.raises(Resolver404):
        resolve("/api/v1/charge")


def test_the_service_tests_run_with_the_deployed_allowed_hosts(objects):
    # harness/server.py starts the real server with these; they must be what the pod gets.
    assert allowed_hosts(objects) == CLUSTER_ALLOWED_HOSTS.split(",")


def test_allowed_hosts_cover_every_in_cluster_name_of_the_payment_service(objects):
    allowed = allowed_hosts(objects)
    for name in ("payment", "payment.payment", "payment.payment.svc",
                 "payment.payment.svc.cluster.local"):
        assert host_allowed(f"{name}:8000", allowed), name
    assert not host_allowed("evil.example.com", allowed)


# --- Probes --------------------------------------------------------------------------------

@pytest.mark.parametrize("probe, view", [
    ("startupProbe", "healthz"), ("livenessProbe", "healthz"), ("readinessProbe", "readyz"),
])
def test_payment_probes_hit_real_health_views(objects, probe, view):
    deployment = find(objects, "Deployment", "payment", "payment")
    container = containers(deployment)[0]
    get = container[probe]["httpGet"]
    assert resolve(get["path"]).url_name == view
    resolve_target_port(deployment, get["port"])
    # The kubelet sends the pod IP as Host unless told otherwise; Django would answer 400.
    hosts = [h["value"] for h in get.get("httpHeaders", []) if h["name"].lower() == "host"]
    assert hosts and host_allowed(hosts[0], allowed_hosts(objects))


def test_antaeus_probes_and_slow_start(objects):
    deployment = find(objects, "Deployment", "antaeus", "antaeus")
    container = containers(deployment)[0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/rest/health"
        assert resolve_target_port(deployment, get["port"]) == 8000
        assert container[probe].get("initialDelaySeconds", 0) == 0, "the startupProbe waits"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60, "well over 10 min"
    memory = container["resources"]["limits"]["memory"]
    assert memory.endswith("Gi") and float(memory[:-2]) >= 2


def test_termination_grace_outlasts_gunicorns_graceful_timeout(objects, monkeypatch):
    deployment = find(objects, "Deployment", "payment", "payment")
    # Only what the pod sets: nothing the calling shell (or make) may have exported.
    for name in ("GUNICORN_GRACEFUL_TIMEOUT", "HOST", "METRICS_HOST", "METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in container_env(objects, deployment).items():
        monkeypatch.setenv(name, value)
    config = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # Each container gets its stop signal after its own preStop hook, and the grace
    # period counts from the hooks' start: it covers every container's hook and drain.
    hooks = {c["name"]: pre_stop_seconds(c) for c in containers(deployment)}
    assert set(hooks) == {"payment", "proxy"}
    nginx_quit = nginx_shutdown_timeout(objects, deployment)
    assert grace > hooks["payment"] + config["graceful_timeout"] + 5
    assert grace > hooks["proxy"] + nginx_quit + 5
    if hooks["proxy"]:
        # gunicorn is stopped only after nginx has quit, so no request nginx passes on
        # meets a gunicorn that no longer accepts.
        assert hooks["payment"] >= hooks["proxy"] + nginx_quit
    # gunicorn on the pod's loopback only: nothing reaches it but nginx.
    assert config["bind"] == [f"127.0.0.1:{container_env(objects, deployment)['PORT']}"]
    # Its metrics on every address of the pod: Prometheus scrapes them from outside it.
    assert (config["metrics_host"], config["metrics_port"]) == ("0.0.0.0", 9000)


def pre_stop_seconds(container: dict) -> int:
    """How long a container's preStop hook takes: a sleep action, or the `sleep N` its
    exec command ends with; 0 without a hook."""
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    if "sleep" in hook:
        return hook["sleep"]["seconds"]
    (seconds,) = re.findall(r"\bsleep (\d+)\b", " ".join(hook["exec"]["command"]))
    return int(seconds)


def nginx_shutdown_timeout(objects: list[dict], deployment: dict) -> int:
    (seconds,) = re.findall(r"^worker_shutdown_timeout (\d+)s;", nginx_text(objects, deployment), re.M)
    return int(seconds)


def test_the_proxys_drain_file_is_the_one_nginx_checks(objects):
    """The proxy's preStop hook creates the file that turns nginx's drain location on, on
    the container's writable /tmp (the root filesystem is read-only)."""
    deployment = find(objects, "Deployment", "payment", "payment")
    (proxy,) = [c for c in containers(deployment) if c["name"] == "proxy"]
    checked = re.findall(r"if \(-f (\S+)\)", nginx_text(objects, deployment))
    assert checked == ["/tmp/draining"]
    assert "/tmp" in {m["mountPath"] for m in proxy["volumeMounts"]}
    hook = proxy.get("lifecycle", {}).get("preStop")
    if hook is not None:
        assert f"touch {checked[0]}" in " ".join(hook["exec"]["command"])


# --- Labels and selectors ---------------------------------------------------------------

@pytest.mark.parametrize("service", SERVICES)
def test_recommended_labels_on_every_object_and_pod(env, service):
    expected = {
        "app.kubernetes.io/name": service,
        "app.kubernetes.io/component": COMPONENTS[service],
        "app.kubernetes.io/part-of": "antaeus-billing",
        "app.kubernetes.io/managed-by": "kustomize",
        "app.kubernetes.io/instance": f"{service}-{env}",
    }
    for obj in render(f"overlays/{env}/{service}"):
        labelled = [obj["metadata"]]
        if obj["kind"] == "Deployment":
            labelled.append(obj["spec"]["template"]["metadata"])
        for meta in labelled:
            assert expected.items() <= meta.get("labels", {}).items(), (
                f"{obj['kind']}/{obj['metadata']['name']}: {meta.get('labels')}"
            )


@pytest.mark.parametrize("service", SERVICES)
def test_selectors_and_references_match(objects, service):
    deployment = find(objects, "Deployment", service, service)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": service}, "selectors are immutable: name only"
    pod = deployment["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["namespace"] == service]
    assert services
    for svc in services:
        assert svc["spec"]["selector"] == selector
        assert pods_selected(objects, svc) == [deployment]
        for port in svc["spec"]["ports"]:
            resolve_target_port(deployment, port["targetPort"])
    find(objects, "ServiceAccount", pod["spec"]["serviceAccountName"], service)
    assert pod["spec"]["automountServiceAccountToken"] is False
    for volume in pod["spec"].get("volumes", []):
        if "persistentVolumeClaim" in volume:
            find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], service)


def test_no_secret_objects_or_secret_values_in_git(objects):
    assert not [o for o in objects if o["kind"] == "Secret"]
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            for key in obj.get("data", {}):
                assert not any(w in key for w in ("SECRET", "PASSWORD", "TOKEN")), key


# --- Workload shape ---------------------------------------------------------------------

def test_payment_never_runs_two_pods_on_one_sqlite_file(objects):
    deployment = find(objects, "Deployment", "payment", "payment")
    config = container_env(objects, deployment)
    if "DATABASE_URL_FILE" in config:
        # PostgreSQL (components/postgres): no SQLite file at all, test_postgres.py.
        assert "DATABASE_URL" not in config
        assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
        return
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    claim = find(objects, "PersistentVolumeClaim", "payment-data", "payment")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["mountPath"]: m["name"] for m in containers(deployment)[0]["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "payment-data"
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # The image keeps the database and the generated secret key in /data unless told otherwise.
    for key in ("DATABASE_PATH", "DJANGO_SECRET_KEY_FILE"):
        assert config.get(key, "/data/").startswith("/data/"), key


def test_antaeus_runs_one_replica(objects):
    assert find(objects, "Deployment", "antaeus", "antaeus")["spec"]["replicas"] == 1


def test_every_container_has_requests_and_limits(objects):
    workloads = [find(objects, "Deployment", service, service) for service in SERVICES]
    for workload in workloads + [o for o in objects if o["kind"] == "Job"]:
        service = workload["metadata"]["name"]
        for container in containers(workload):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{service}: {kind}"


# --- Pod Security Standards -------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                         "SYS_CHROOT"}


def pss_violations(pod: dict) -> set[str]:
    """The Pod Security Standards controls a pod spec breaks (`baseline:` / `restricted:`)."""
    out: set[str] = set()
    pod_ctx = pod.get("securityContext", {})
    if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        out.add("baseline:host-namespaces")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            out.add("baseline:hostPath")
        if not kinds <= RESTRICTED_VOLUMES:
            out.add("restricted:volume-types")
    if pod_ctx.get("sysctls"):
        out.add("baseline:sysctls")
    for c in pod.get("initContainers", []) + pod["containers"]:
        ctx = c.get("securityContext", {})
        caps = ctx.get("capabilities", {})
        if ctx.get("privileged"):
            out.add("baseline:privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.add("baseline:hostPorts")
        if not set(caps.get("add", [])) <= BASELINE_CAPABILITIES:
            out.add("baseline:capabilities")
        if not set(caps.get("add", [])) <= {"NET_BIND_SERVICE"} or "ALL" not in caps.get("drop", []):
            out.add("restricted:capabilities")
        if ctx.get("procMount", "Default") != "Default":
            out.add("baseline:procMount")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp == "Unconfined":
            out.add("baseline:seccomp")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.add("restricted:seccomp")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.add("restricted:allowPrivilegeEscalation")
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            out.add("restricted:runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            out.add("restricted:runAsUser")
    return out


def test_pss_checker_catches_a_root_privileged_pod():
    pod = {"hostNetwork": True, "containers": [{"securityContext": {"privileged": True}}]}
    assert {"baseline:host-namespaces", "baseline:privileged", "restricted:runAsNonRoot",
            "restricted:seccomp", "restricted:capabilities"} <= pss_violations(pod)


def test_payment_meets_restricted_in_full_and_its_namespace_enforces_it(objects):
    pod = find(objects, "Deployment", "payment", "payment")["spec"]["template"]["spec"]
    assert pss_violations(pod) == set()
    for job in (o for o in objects if o["kind"] == "Job"):
        assert job["metadata"]["namespace"] == "payment"
        assert pss_violations(job["spec"]["template"]["spec"]) == set(), job["metadata"]["name"]
    container = containers(find(objects, "Deployment", "payment", "payment"))[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    labels = find(objects, "Namespace", "payment")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_antaeus_meets_baseline_and_misses_restricted_only_by_running_as_root(objects):
    pod = find(objects, "Deployment", "antaeus", "antaeus")["spec"]["template"]["spec"]
    assert pss_violations(pod) == {"restricted:runAsNonRoot"}
    labels = find(objects, "Namespace", "antaeus")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_nginx_drops_idle_upstream_connections_before_gunicorn_does(objects):
    """A POST is not retried by nginx: sent on a kept-alive connection gunicorn is just
    closing, it would come back as a 503, so nginx must give idle connections up first."""
    deployment = find(objects, "Deployment", "payment", "payment")
    text = nginx_text(objects, deployment)
    upstream = re.search(r"upstream gunicorn \{(.*?)\}", text, re.DOTALL)[1]
    (idle,) = re.findall(r"keepalive_timeout (\d+)s;", upstream)
    config = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    assert int(idle) < config["keepalive"]
