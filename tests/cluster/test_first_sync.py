"""The first sync, on a real control plane, the way Flux performs it.

For each environment, on a new cluster: the bootstrap (Flux's CRDs and its controllers'
identities), then `clusters/<env>/`, then every Flux Kustomization's path in `dependsOn`
order, applied server-side as the identity that Kustomization impersonates (its
`serviceAccountName`; unset, Flux's own kustomize-controller account, and the tests
require it set so that the tree also works under Flux's multi-tenancy lockdown). After each step, the reads that
kustomize-controller's health check (kstatus) makes, as that identity, and what the real
controllers did with the objects: ReplicaSets and Pods created and admitted, the
migration Job's Pods created, the autoscaler's target found, no FailedCreate.

There is no kubelet and no operator: pods stay Pending, Helm charts are not rendered
(their CRDs are installed at bootstrap), so "ready" here means everything up to the
point where a node would take over.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane, Unavailable, assets_dir
from tests.kube import REPO, cluster_manifests, is_bootstrap, render

pytestmark = pytest.mark.cluster

ENVIRONMENTS = ("staging", "production")
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
FLUX_CONTROLLERS = ("kustomize-controller", "helm-controller")

# The steps docs/deploy.md's first-sync checklist asks of the user before Flux can
# converge, by environment: (namespace, Secret name, keys). The tier performs them, as
# the cluster admin, once the namespace exists (the platform layer creates it).
SECRETS_BY_HAND = {
    "staging": [("payment", "payment-secrets", ("django-secret-key",))],
    "production": [
        ("payment", "payment-secrets", ("django-secret-key",)),
        ("oauth2-proxy", "oauth2-proxy", ("client-id", "client-secret", "cookie-secret")),
    ],
}


def identity(namespace: str, service_account: str | None) -> str:
    """Who kustomize-controller is while it applies: the named account of the
    Kustomization's namespace, or, unset, itself (without the lockdown flags)."""
    if not service_account:
        return "system:serviceaccount:flux-system:kustomize-controller"
    return f"system:serviceaccount:{namespace}:{service_account}"


def bootstrap(plane: ControlPlane) -> None:
    """What `flux bootstrap` and the operators' charts leave behind before the first
    Kustomization runs: every pinned CRD, the flux-system namespace, and the controllers'
    service accounts bound to cluster-admin (Flux's `cluster-reconciler` binding)."""
    for path in sorted((assets_dir() / "crds").glob("*.yaml")):
        # Only the CRDs: a release manifest may carry the operator too.
        documents = list(yaml.load_all(path.read_text(), Loader=FAST_LOADER))
        crds = [d for d in documents if d and d.get("kind") == "CustomResourceDefinition"]
        plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}))
    plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}]
    for name in FLUX_CONTROLLERS:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": name, "namespace": "flux-system"}})
    objects.append({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-reconciler-flux-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": n, "namespace": "flux-system"} for n in FLUX_CONTROLLERS],
    })
    plane.apply(objects, field_manager="flux-bootstrap")


def dependency_order(kustomizations: dict[tuple[str, str], dict], done: set) -> list[tuple[str, str]]:
    """The Kustomizations whose dependencies are all done, in a stable order."""
    ready = []
    for key, ks in sorted(kustomizations.items()):
        if key in done:
            continue
        deps = {(d.get("namespace", key[0]), d["name"]) for d in ks["spec"].get("dependsOn", [])}
        if deps <= done:
            ready.append(key)
    return ready


class FirstSync:
    """One environment's first sync. Each step is checked before the Kustomizations that
    depend on it are applied, as Flux would only apply them once it is ready; the findings
    are kept for the tests, so that one failure does not hide the others."""

    def __init__(self, plane: ControlPlane, env: str):
        self.plane, self.env = plane, env
        self.kustomizations: dict[tuple[str, str], dict] = {}
        self.applied: dict[tuple[str, str], list[dict]] = {}
        self.order: list[tuple[str, str]] = []
        self.secrets_done: set[tuple[str, str]] = set()
        # category (apply, health-read, pods, autoscaler) -> the problems, each with its step.
        self.findings: dict[str, list[str]] = {}

    def problem(self, category: str, key: tuple[str, str], message: str) -> None:
        self.findings.setdefault(category, []).append(f"{key[0]}/{key[1]}: {message}")

    def run(self) -> None:
        bootstrap(self.plane)
        entry = cluster_manifests(self.env)
        # The bootstrap Kustomization runs as kustomize-controller (the lockdown patch
        # Flux's multi-tenancy guide gives it).
        self.plane.apply(entry, identity=identity("flux-system", "kustomize-controller"))
        self._collect(entry)
        done: set[tuple[str, str]] = set()
        while len(done) < len(self.kustomizations):
            ready = dependency_order(self.kustomizations, done)
            assert ready, f"dependsOn cycle or a missing dependency among {sorted(set(self.kustomizations) - done)}"
            for key in ready:
                self._step(key)
                done.add(key)

    def _collect(self, objects: list[dict]) -> None:
        for obj in objects:
            # The bootstrap's own Kustomization (a bootstrapped fork has it) applies this
            # folder, which run() has just done.
            if obj["kind"] == "Kustomization" and obj["apiVersion"].startswith("kustomize.toolkit.fluxcd.io/") \
                    and not is_bootstrap(obj):
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                assert key not in self.kustomizations, f"{key} defined twice"
                self.kustomizations[key] = obj

    def _step(self, key: tuple[str, str]) -> None:
        ks = self.kustomizations[key]
        objects = render(ks["spec"]["path"].removeprefix("./"))
        who = self.identity_of(key)
        try:
            self.plane.apply(objects, identity=who)
        except AssertionError as error:
            # Flux reports it and retries; nothing of the step is applied.
            self.problem("apply", key, str(error))
            objects = []
        self.applied[key] = objects
        self.order.append(key)
        self._collect(objects)
        self._health_reads(key, who, objects)
        self._controller_outcomes(key, objects)
        self._create_secrets_once_namespaces_exist()

    def _health_reads(self, key, who: str, objects: list[dict]) -> None:
        """kstatus reads each applied object and, for a workload, lists the ReplicaSets and
        Pods it generated; a denied read leaves the status Unknown and the wait times out."""
        for obj in objects:
            namespace = obj["metadata"].get("namespace")
            kind = f"{obj['kind'].lower()}.{obj['apiVersion'].rpartition('/')[0]}".rstrip(".")
            scope = ["-n", namespace] if namespace else []
            result = self.plane.kubectl("get", kind, obj["metadata"]["name"], "-o", "name", *scope,
                                        identity=who, check=False)
            if result.returncode != 0:
                self.problem("health-read", key, f"{who} cannot get {kind} {obj['metadata']['name']}: {result.stderr.strip()}")
            if obj["kind"] in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
                for listed in ("replicasets.apps", "pods"):
                    result = self.plane.kubectl("get", listed, *scope, "-o", "name", identity=who, check=False)
                    if result.returncode != 0:
                        self.problem("health-read", key, f"{who} cannot list {listed}: {result.stderr.strip()}")

    def _controller_outcomes(self, key, objects: list[dict]) -> None:
        """What the real controllers make of the step, before anything after it applies."""
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            namespace = obj["metadata"].get("namespace")
            if kind == "Deployment":
                selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())
                if not self._eventually(lambda: self.plane.items("pods", namespace, selector=selector)):
                    self.problem("pods", key, f"Deployment {name} has no pod: {self.refusals(namespace)}")
            elif kind == "Job":
                if not self._eventually(lambda: self.plane.items("pods", namespace, selector=f"job-name={name}")):
                    self.problem("pods", key, f"Job {name} has no pod: {self.refusals(namespace)}")
            elif kind == "HorizontalPodAutoscaler":
                def able_to_scale():
                    current = self.plane.get("hpa", name, namespace=namespace) or {}
                    conditions = {c["type"]: c for c in current.get("status", {}).get("conditions", [])}
                    return conditions.get("AbleToScale")
                condition = self._eventually(able_to_scale, timeout=40)
                if not condition or condition["status"] != "True":
                    self.problem("autoscaler", key, f"HPA {name}: {condition or self.refusals(namespace)}")

    def _eventually(self, predicate, timeout: float = 30):
        try:
            return self.plane.wait_for(predicate, "the controllers", timeout=timeout)
        except AssertionError:
            return None

    def refusals(self, namespace: str) -> list[str]:
        return [
            f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['reason']}: {e['message']}"
            for e in self.plane.events(namespace)
            if e.get("reason") in ("FailedCreate", "FailedGetScale")
        ]

    def _create_secrets_once_namespaces_exist(self) -> None:
        for namespace, name, keys in SECRETS_BY_HAND[self.env]:
            if (namespace, name) in self.secrets_done or not self.plane.get("namespace", namespace):
                continue
            self.plane.apply([{
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "stringData": {k: "test-only-value" for k in keys},
            }], field_manager="operator-by-hand")
            self.secrets_done.add((namespace, name))

    def identity_of(self, key: tuple[str, str]) -> str:
        return identity(key[0], self.kustomizations[key]["spec"].get("serviceAccountName"))


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def synced(request):
    try:
        plane = ControlPlane.start()
    except Unavailable as error:
        pytest.fail(f"the control-plane tier cannot run: {error}")
    try:
        sync = FirstSync(plane, request.param)
        sync.run()
        yield sync
    finally:
        plane.stop()


def workloads(sync: FirstSync, kind: str) -> list[tuple[tuple[str, str], dict]]:
    return [(key, obj) for key in sync.order for obj in sync.applied[key] if obj["kind"] == kind]


def report(sync: FirstSync, category: str) -> str:
    return "\n".join(sync.findings.get(category, []))


def test_every_kustomization_is_applied_in_dependency_order(synced):
    assert not synced.findings.get("apply"), report(synced, "apply")
    expected = {("flux-system", "infrastructure"), ("flux-system", "platform"), ("flux-system", "tenants"),
                ("antaeus", "antaeus"), ("payment", "payment")}
    if synced.env == "production":
        expected |= {("payment", "payment-database"), ("flux-system", "infrastructure-auth")}
    assert expected <= set(synced.order)
    for key in synced.order:
        for dep in synced.kustomizations[key]["spec"].get("dependsOn", []):
            assert synced.order.index((dep.get("namespace", key[0]), dep["name"])) < synced.order.index(key)


def test_every_kustomization_names_the_account_it_applies_with(synced):
    """Under Flux's lockdown (`--default-service-account`), an unset serviceAccountName
    means the namespace's `default`, which may do nothing."""
    for key, ks in synced.kustomizations.items():
        assert ks["spec"].get("serviceAccountName"), f"{key} would impersonate {key[0]}:default"


def test_helm_releases_name_an_identity_that_may_install_their_chart(synced):
    """helm-controller impersonates the release's serviceAccountName (in the release's
    namespace); an operator chart creates CRDs, cluster roles and workloads."""
    releases = workloads(synced, "HelmRelease")
    assert releases
    for _, release in releases:
        namespace = release["metadata"]["namespace"]
        account = release["spec"].get("serviceAccountName")
        assert account, f"HelmRelease {namespace}/{release['metadata']['name']} would impersonate default"
        who = f"system:serviceaccount:{namespace}:{account}"
        target = release["spec"].get("targetNamespace", namespace)
        for verb, resource, where in (("create", "customresourcedefinitions", None),
                                      ("create", "clusterroles", None),
                                      ("create", "deployments", target),
                                      ("create", "secrets", target)):
            args = ["auth", "can-i", verb, resource] + (["-n", where] if where else [])
            answer = synced.plane.kubectl(*args, identity=who, check=False).stdout.strip()
            assert answer == "yes", f"{who} may not {verb} {resource} for {release['metadata']['name']}"


def test_health_checks_can_read_what_they_need(synced):
    assert not synced.findings.get("health-read"), report(synced, "health-read")


def test_workloads_get_their_pods_created_and_admitted(synced):
    """Deployments' ReplicaSets and the migration Job create pods that Pod Security, the
    ServiceAccount admission and the reconciler guard admit, before the next step."""
    assert not synced.findings.get("pods"), report(synced, "pods")
    names = {o["metadata"]["name"] for _, o in workloads(synced, "Deployment") + workloads(synced, "Job")}
    assert names >= {"payment", "antaeus"} | ({"payment-migrate"} if synced.env == "production" else set())


def test_autoscalers_find_their_target(synced):
    assert not synced.findings.get("autoscaler"), report(synced, "autoscaler")
    assert bool(workloads(synced, "HorizontalPodAutoscaler")) == (synced.env == "production")


def test_no_refused_creations_anywhere(synced):
    for namespace in ("payment", "antaeus"):
        assert not synced.refusals(namespace), synced.refusals(namespace)


def test_no_pod_may_run_as_the_reconciler(synced):
    """The ValidatingAdmissionPolicy of the platform layer is type-checked and enforced."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "as-reconciler", "namespace": "payment"},
        "spec": {
            "serviceAccountName": "flux-reconciler",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "registry.example.com/x:1", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        },
    }
    result = synced.plane.kubectl("create", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert result.returncode != 0 and "flux-reconciler" in result.stderr and "denied" in result.stderr, result.stderr
    policy = synced.plane.get("validatingadmissionpolicy", "antaeus-billing-no-pods-as-flux-reconciler")
    assert not policy["status"].get("typeChecking", {}).get("expressionWarnings")


def test_the_guide_lists_the_steps_by_hand_the_tier_performs():
    """docs/deploy.md's first-sync checklist names every Secret this tier has to create
    by hand, in the namespace it creates it in."""
    guide = (REPO / "docs" / "deploy.md").read_text()
    checklist = guide[guide.index("First sync, step by step"):guide.index("## 6. Deploy with Argo CD")]
    for steps in SECRETS_BY_HAND.values():
        for namespace, name, _ in steps:
            assert f"`{name}`" in checklist and f"`{namespace}`" in checklist, (namespace, name)


def test_break_glass_may_port_forward_to_payment_but_not_to_the_database(synced):
    """The break-glass group's pods/portforward right covers every pod of the namespace;
    the admission policy of components/postgres/platform refuses the database's. The
    CONNECT reaches admission on the real API server; with no kubelet, an admitted one
    then fails for want of a node, which is how the two are told apart."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "payment"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "registry.example.com/x:1", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        },
    }
    for name in ("payment-db-1", "payment-6d4cf56db6-abcde"):
        pod["metadata"]["name"] = name
        synced.plane.apply([pod], field_manager="test")

    def forward(name: str) -> tuple[int, str]:
        return synced.plane.request("POST", f"/api/v1/namespaces/payment/pods/{name}/portforward?ports=8080",
                                    user="oncall@example.com", groups=("payment-break-glass", "system:authenticated"))

    if synced.env == "staging":
        # No break-glass in staging (developers may roll out there): RBAC refuses it all.
        for name in ("payment-db-1", "payment-6d4cf56db6-abcde"):
            status, body = forward(name)
            assert status == 403 and "cannot create resource" in body, (status, body)
        return
    status, body = forward("payment-db-1")
    assert status == 403 and "antaeus-billing-no-port-forward-to-payment-db" in body, (status, body)
    status, body = forward("payment-6d4cf56db6-abcde")
    assert status != 403 and "no port-forward" not in body, (status, body)
    # And a developer may not port-forward at all (RBAC, before admission).
    status, body = synced.plane.request("POST", "/api/v1/namespaces/payment/pods/payment-6d4cf56db6-abcde/portforward?ports=8080",
                                        user="dev@example.com", groups=("payment-developers", "system:authenticated"))
    assert status == 403 and "cannot create resource" in body, (status, body)
