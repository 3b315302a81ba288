"""RBAC of both overlays, decided by the evaluator in rbac.py against the rendered
Roles, ClusterRoles and bindings of `overlays/<env>` (the whole tree kubectl would apply)."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import itertools
import sys

import pytest

from tests.isolation.admission import Admission
from tests.isolation.rbac import RBAC_KINDS, Authorizer, Request, Subject
from tests.kube import REPO, find, render


def _load_can_i():
    """scripts/can-i, the operator's copy of the table, loaded as a module."""
    loader = importlib.machinery.SourceFileLoader("can_i", str(REPO / "scripts" / "can-i"))
    spec = importlib.util.spec_from_loader("can_i", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    loader.exec_module(module)
    return module


can_i = _load_can_i()
ENVIRONMENTS, SERVICES, rows, script = can_i.ENVIRONMENTS, can_i.SERVICES, can_i.rows, can_i.script

pytestmark = pytest.mark.manifests


@functools.cache
def authorizer(env: str) -> Authorizer:
    return Authorizer(render(f"overlays/{env}"))


def _table_cases():
    return [pytest.param(env, row, id=f"{env}: {row.id}") for env in ENVIRONMENTS for row in rows(env)]


@functools.cache
def admission(env: str) -> Admission:
    return Admission(render(f"overlays/{env}"))


def decide(env: str, row) -> bool:
    """RBAC's answer; for a row that names its pod (a port-forward), admission's after it."""
    who = Subject.parse(row.subject)
    request = Request.parse(row.verb, row.resource, None if row.namespace == "-" else row.namespace, row.name)
    if not authorizer(env).allowed(who, request):
        return False
    return not row.name or admission(env).denial(who, request) is None


@pytest.mark.parametrize(("env", "row"), _table_cases())
def test_rbac_table(env, row):
    assert decide(env, row) is row.expected


def test_break_glass_reaches_payment_but_not_its_database_and_the_policy_is_why():
    """RBAC alone lets the group port-forward to any pod of the namespace; without the
    admission policy the database's pods would be reachable (so the table's "no" rows
    come from the policy, and would fail without it)."""
    objects = render("overlays/production")
    who = Subject.parse("group:payment-break-glass")
    cluster = find(objects, "Cluster", "payment-db", "payment")["metadata"]["name"]
    database_pod = Request.parse("create", "pods/portforward", "payment", f"{cluster}-1")
    assert Authorizer(objects).allowed(who, database_pod)
    denial = Admission(objects).denial(who, database_pod)
    assert denial is not None and "database" in denial.message
    unguarded = [o for o in objects if not o["kind"].startswith("ValidatingAdmissionPolicy")
                 or "payment-db" not in o["metadata"]["name"]]
    assert Admission(unguarded).denial(who, database_pod) is None
    # The policy names the pods by the Cluster's name, the prefix CloudNativePG gives them.
    [policy] = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy" and "payment-db" in o["metadata"]["name"]]
    assert f"'{cluster}-'" in policy["spec"]["validations"][0]["expression"]
    # Every pod the payment Deployment or the migration Job can have is admitted.
    for name in ("payment-7c9d5b6f48-q2x7k", "payment-migrate-8kq2z"):
        assert Admission(objects).denial(who, Request.parse("create", "pods/portforward", "payment", name)) is None
    # Staging has no database pods and no such policy.
    assert not [o for o in render("overlays/staging") if o["kind"] == "ValidatingAdmissionPolicy"
                and "payment-db" in o["metadata"]["name"]]


def test_table_covers_both_answers_for_every_subject_kind():
    # A table of only "no" rows would pass against an empty RBAC tree.
    for env in ENVIRONMENTS:
        answers = {(row.subject.split(":")[0], row.expected) for row in rows(env)}
        assert answers >= {("group", True), ("group", False), ("sa", True), ("sa", False)}, env


# --- sweeps: the "never" rules, for every subject the overlays bind, everywhere ---------

NAMESPACES = (*SERVICES, "default", "kube-system", "flux-system", None)
NEVER = (
    *(Request.parse(verb, "secrets") for verb in ("get", "list", "watch", "create", "update", "patch", "delete")),
    Request.parse("create", "pods/exec"),
    Request.parse("create", "serviceaccounts/token"),
    *(Request.parse(verb, kind) for verb in ("create", "update", "patch", "delete", "escalate", "bind")
      for kind in ("roles.rbac.authorization.k8s.io", "clusterroles.rbac.authorization.k8s.io")),
    *(Request.parse(verb, kind) for verb in ("create", "update", "patch", "delete")
      for kind in ("rolebindings.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io",
                   "networkpolicies.networking.k8s.io", "namespaces",
                   "validatingadmissionpolicies.admissionregistration.k8s.io",
                   "validatingadmissionpolicybindings.admissionregistration.k8s.io")),
    *(Request.parse("impersonate", kind) for kind in ("users", "groups", "serviceaccounts", "uids")),
)


def bound_subjects(env: str) -> list[Subject]:
    """Every subject any binding of the overlay names, as the API server would see it."""
    found = set()
    for obj in render(f"overlays/{env}"):
        if obj["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        for subject in obj.get("subjects") or []:
            if subject["kind"] == "Group":
                found.add(Subject.member_of(subject["name"]))
            elif subject["kind"] == "ServiceAccount":
                found.add(Subject.service_account(subject.get("namespace") or obj["metadata"]["namespace"],
                                                  subject["name"]))
            else:
                found.add(Subject(subject["name"], frozenset({"system:authenticated"})))
    return sorted(found, key=lambda s: s.user + ",".join(sorted(s.groups)))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_bound_subject_can_read_secrets_or_escalate_anywhere(env):
    subjects = bound_subjects(env)
    # Both developer groups and both reconcilers, at least.
    assert {s.user for s in subjects} >= {"system:serviceaccount:antaeus:flux-reconciler",
                                          "system:serviceaccount:payment:flux-reconciler"}
    assert {g for s in subjects for g in s.groups} >= {"antaeus-developers", "payment-developers"}
    granted = [
        (who.user, sorted(who.groups), request)
        for who, base, namespace in itertools.product(subjects, NEVER, NAMESPACES)
        if authorizer(env).allowed(who, request := Request(**{**base.__dict__, "namespace": namespace}))
    ]
    assert not granted


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_developers_hold_nothing_outside_their_namespace(env):
    verbs = ("get", "list", "watch", "create", "update", "patch", "delete")
    resources = ("pods", "pods/log", "pods/portforward", "deployments.apps", "services", "configmaps", "events")
    for svc in SERVICES:
        who = Subject.member_of(f"{svc}-developers")
        for namespace in (*[s for s in SERVICES if s != svc], "default", "kube-system", None):
            granted = [
                (verb, resource)
                for verb in verbs
                for resource in resources
                if authorizer(env).allowed(who, Request.parse(verb, resource, namespace))
            ]
            assert not granted, f"{svc}-developers in {namespace}: {granted}"


# --- Flux applies each service with that namespace's reconciler ------------------------

KIND_RESOURCES = {
    "Deployment": "deployments.apps",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Ingress": "ingresses.networking.k8s.io",
    "Secret": "secrets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
    "PodDisruptionBudget": "poddisruptionbudgets.policy",
    "Job": "jobs.batch",
    "Cluster": "clusters.postgresql.cnpg.io",
    "ExternalSecret": "externalsecrets.external-secrets.io",
    "PodMonitor": "podmonitors.monitoring.coreos.com",
    "PrometheusRule": "prometheusrules.monitoring.coreos.com",
}
# What kustomize-controller does with the objects of a Kustomization: server-side apply
# (create/patch), drift detection and health checks (get/list/watch), garbage collection
# (delete).
APPLY_VERBS = ("get", "list", "watch", "create", "patch", "delete")


# Each part of an environment Flux applies with a namespace's reconciler, and that namespace.
PARTS = [(env, svc, svc) for env in ENVIRONMENTS for svc in SERVICES] + [("production", "payment-database", "payment")]


@pytest.mark.parametrize(("env", "part", "svc"), PARTS)
def test_reconciler_can_apply_exactly_its_service_overlay(env, part, svc):
    objects = render(f"overlays/{env}/{part}")
    assert objects
    (other,) = [s for s in SERVICES if s != svc]
    reconciler = Subject.service_account(svc, "flux-reconciler")
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        assert kind in KIND_RESOURCES, f"{kind} {name}: no resource mapping; add it here and, deliberately, to the Role"
        assert kind not in RBAC_KINDS | {"NetworkPolicy", "Namespace"}, f"guard rail {kind} in a service overlay"
        assert obj["metadata"].get("namespace") == svc, f"{kind} {name} is not in namespace {svc}"
        resource = KIND_RESOURCES[kind]
        for verb in APPLY_VERBS:
            assert authorizer(env).allowed(reconciler, Request.parse(verb, resource, svc, name)), (
                f"flux-reconciler in {svc} cannot {verb} {resource} {name}"
            )
            assert not authorizer(env).allowed(reconciler, Request.parse(verb, resource, other, name)), (
                f"flux-reconciler of {svc} can {verb} {resource} in {other}"
            )


# --- structure -------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rbac_is_namespace_scoped_and_without_wildcards(env):
    objects = render(f"overlays/{env}")
    assert not [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert binding["metadata"]["namespace"] in SERVICES
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount":
                # A binding may only ever name its own namespace's reconciler.
                assert subject["namespace"] == binding["metadata"]["namespace"], binding
    for role in (o for o in objects if o["kind"] in ("Role", "ClusterRole")):
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            for field in ("verbs", "apiGroups", "resources"):
                assert all("*" not in value for value in rule.get(field, [])), (role["metadata"]["name"], rule)


def test_can_i_script_lists_every_row_with_its_expected_answer():
    for env in ENVIRONMENTS:
        text = script(env)
        checks = [line for line in text.splitlines() if line.startswith("check ")]
        forwards = [line for line in text.splitlines() if line.startswith("forward ")]
        assert len(checks) + len(forwards) == len(rows(env))
        if env == "production":  # the database's pods are tried for real: admission is no part of can-i
            assert "forward kubectl port-forward --namespace=payment pod/payment-db-1 :5432 --as=isolation-check " \
                   "--as-group=payment-break-glass" in text
        assert "check no kubectl auth can-i get secrets --namespace=payment --as=isolation-check " \
               "--as-group=payment-developers" in text
        assert "check yes kubectl auth can-i get pods --subresource=log --namespace=antaeus" in text
        assert "--as=system:serviceaccount:antaeus:flux-reconciler" in text


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_platform_objects_carry_the_recommended_labels(env):
    for obj in render(f"overlays/{env}/platform"):
        labels = obj["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "antaeus-billing", obj["metadata"]
        assert labels.get("app.kubernetes.io/component") == "platform", obj["metadata"]
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize", obj["metadata"]
        assert labels.get("app.kubernetes.io/instance") == f"platform-{env}", obj["metadata"]
        assert labels.get("app.kubernetes.io/name"), obj["metadata"]
