"""The RBAC evaluator's own tests: each Kubernetes matching rule, both ways."""

from __future__ import annotations

import pytest

from tests.isolation.rbac import Authorizer, Request, Subject

pytestmark = pytest.mark.manifests

ALICE = Subject.member_of("team-a", user="alice")
BOB = Subject.member_of("team-b", user="bob")


def role(name, rules, namespace=None, labels=None, aggregate=None):
    kind = "Role" if namespace else "ClusterRole"
    obj = {"kind": kind, "metadata": {"name": name, "labels": labels or {}}, "rules": rules}
    if namespace:
        obj["metadata"]["namespace"] = namespace
    if aggregate is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": aggregate}
    return obj


def binding(name, role_kind, role_name, subjects, namespace=None):
    return {
        "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def group(name):
    return {"kind": "Group", "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def user(name):
    return {"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def sa(name, namespace=None):
    return {"kind": "ServiceAccount", "name": name, **({"namespace": namespace} if namespace else {})}


def can(objects, who, verb, resource, namespace=None, name=""):
    return Authorizer(objects).allowed(who, Request.parse(verb, resource, namespace, name))


def rb_role(rules, namespace="ns1", subjects=None):
    """A Role with `rules` in `namespace`, bound to group team-a there."""
    return [role("r", rules, namespace), binding("b", "Role", "r", subjects or [group("team-a")], namespace)]


# --- verbs, apiGroups, resources --------------------------------------------------------


def test_exact_verb_group_resource():
    objs = rb_role([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}])
    assert can(objs, ALICE, "get", "deployments.apps", "ns1")
    assert not can(objs, ALICE, "list", "deployments.apps", "ns1")  # other verb
    assert not can(objs, ALICE, "get", "deployments", "ns1")  # core group, not apps
    assert not can(objs, ALICE, "get", "replicasets.apps", "ns1")  # other resource


def test_wildcard_verbs():
    objs = rb_role([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}])
    for verb in ("get", "delete", "deletecollection", "escalate", "impersonate"):
        assert can(objs, ALICE, verb, "pods", "ns1")
    assert not can(objs, ALICE, "get", "secrets", "ns1")


def test_wildcard_resources_include_subresources():
    objs = rb_role([{"apiGroups": [""], "resources": ["*"], "verbs": ["get", "create"]}])
    assert can(objs, ALICE, "get", "secrets", "ns1")
    assert can(objs, ALICE, "create", "pods/exec", "ns1")
    assert not can(objs, ALICE, "get", "deployments.apps", "ns1")  # groups still match exactly


def test_wildcard_api_groups():
    objs = rb_role([{"apiGroups": ["*"], "resources": ["deployments"], "verbs": ["get"]}])
    assert can(objs, ALICE, "get", "deployments.apps", "ns1")
    assert can(objs, ALICE, "get", "deployments.extensions", "ns1")
    assert not can(objs, ALICE, "get", "pods", "ns1")


def test_empty_lists_match_nothing():
    objs = rb_role([{"apiGroups": [""], "resources": ["pods"], "verbs": []}])
    assert not can(objs, ALICE, "get", "pods", "ns1")


# --- subresources ----------------------------------------------------------------------


def test_resource_does_not_grant_its_subresources():
    objs = rb_role([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "create"]}])
    assert can(objs, ALICE, "get", "pods", "ns1")
    assert not can(objs, ALICE, "get", "pods/log", "ns1")
    assert not can(objs, ALICE, "create", "pods/portforward", "ns1")
    assert not can(objs, ALICE, "create", "pods/exec", "ns1")


def test_subresource_does_not_grant_the_resource():
    objs = rb_role([{"apiGroups": [""], "resources": ["pods/log", "pods/portforward"], "verbs": ["get", "create"]}])
    assert can(objs, ALICE, "get", "pods/log", "ns1")
    assert can(objs, ALICE, "create", "pods/portforward", "ns1")
    assert not can(objs, ALICE, "get", "pods", "ns1")
    assert not can(objs, ALICE, "create", "pods/exec", "ns1")


def test_star_slash_subresource():
    objs = rb_role([{"apiGroups": ["", "apps"], "resources": ["*/scale"], "verbs": ["update"]}])
    assert can(objs, ALICE, "update", "deployments.apps/scale", "ns1")
    assert can(objs, ALICE, "update", "replicationcontrollers/scale", "ns1")
    assert not can(objs, ALICE, "update", "deployments.apps", "ns1")
    assert not can(objs, ALICE, "update", "pods/status", "ns1")


# --- resourceNames ---------------------------------------------------------------------


def test_resource_names_restrict_to_named_objects():
    objs = rb_role([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["app"], "verbs": ["*"]}])
    assert can(objs, ALICE, "get", "configmaps", "ns1", name="app")
    assert can(objs, ALICE, "patch", "configmaps", "ns1", name="app")
    assert not can(objs, ALICE, "get", "configmaps", "ns1", name="other")
    # list/watch of the collection and create carry no name: never matched.
    assert not can(objs, ALICE, "list", "configmaps", "ns1")
    assert not can(objs, ALICE, "create", "configmaps", "ns1")


def test_no_resource_names_match_any_name():
    objs = rb_role([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])
    assert can(objs, ALICE, "get", "configmaps", "ns1", name="anything")


# --- bindings and scope ----------------------------------------------------------------


def test_role_binding_grants_only_in_its_namespace():
    objs = rb_role([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    assert can(objs, ALICE, "get", "pods", "ns1")
    assert not can(objs, ALICE, "get", "pods", "ns2")
    assert not can(objs, ALICE, "get", "pods", None)  # all namespaces


def test_role_binding_to_cluster_role_is_scoped_to_the_binding_namespace():
    objs = [
        role("reader", [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get"]}]),
        binding("b", "ClusterRole", "reader", [group("team-a")], namespace="ns1"),
    ]
    assert can(objs, ALICE, "get", "pods", "ns1")
    assert not can(objs, ALICE, "get", "pods", "ns2")
    assert not can(objs, ALICE, "get", "pods", None)
    # Cluster-scoped resources are out of a RoleBinding's reach, even via a ClusterRole.
    assert not can(objs, ALICE, "get", "namespaces", None, name="ns1")


def test_cluster_role_binding_grants_everywhere_and_cluster_scope():
    objs = [
        role("reader", [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get"]}]),
        binding("b", "ClusterRole", "reader", [group("team-a")]),
    ]
    assert can(objs, ALICE, "get", "pods", "ns1")
    assert can(objs, ALICE, "get", "pods", "ns2")
    assert can(objs, ALICE, "get", "pods", None)
    assert can(objs, ALICE, "get", "namespaces", None, name="ns1")
    assert not can(objs, BOB, "get", "pods", "ns1")


def test_unbound_roles_and_missing_roles_grant_nothing():
    objs = [
        role("reader", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        role("r", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}], namespace="ns1"),
        binding("b", "Role", "missing", [group("team-a")], namespace="ns1"),
        # A RoleBinding cannot use a Role of another namespace.
        binding("c", "Role", "r", [group("team-a")], namespace="ns2"),
    ]
    assert not can(objs, ALICE, "get", "pods", "ns1")
    assert not can(objs, ALICE, "get", "pods", "ns2")


def test_rules_are_additive_across_bindings():
    objs = [
        *rb_role([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
        role("deleter", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]),
        binding("d", "ClusterRole", "deleter", [group("team-a")], namespace="ns1"),
    ]
    assert can(objs, ALICE, "get", "pods", "ns1")
    assert can(objs, ALICE, "delete", "pods", "ns1")
    assert not can(objs, ALICE, "create", "pods", "ns1")


# --- subjects --------------------------------------------------------------------------


def test_user_and_group_subjects():
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    assert can(rb_role(rules, subjects=[user("alice")]), ALICE, "get", "pods", "ns1")
    assert not can(rb_role(rules, subjects=[user("alice")]), BOB, "get", "pods", "ns1")
    assert not can(rb_role(rules, subjects=[group("alice")]), ALICE, "get", "pods", "ns1")  # a group, not the user
    assert can(rb_role(rules, subjects=[group("team-b")]), BOB, "get", "pods", "ns1")


def test_service_account_subject():
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    objs = rb_role(rules, subjects=[sa("deployer", "ns1")])
    assert can(objs, Subject.service_account("ns1", "deployer"), "get", "pods", "ns1")
    assert not can(objs, Subject.service_account("ns2", "deployer"), "get", "pods", "ns1")
    assert not can(objs, Subject.service_account("ns1", "other"), "get", "pods", "ns1")
    # A user who merely has the same name is not the service account.
    assert not can(objs, Subject.member_of(user="deployer"), "get", "pods", "ns1")


def test_service_account_subject_without_namespace_defaults_to_the_binding_namespace():
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    objs = rb_role(rules, subjects=[sa("deployer")])
    assert can(objs, Subject.service_account("ns1", "deployer"), "get", "pods", "ns1")
    assert not can(objs, Subject.service_account("ns2", "deployer"), "get", "pods", "ns1")


def test_service_account_groups():
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    all_in_ns1 = rb_role(rules, subjects=[group("system:serviceaccounts:ns1")])
    assert can(all_in_ns1, Subject.service_account("ns1", "any"), "get", "pods", "ns1")
    assert not can(all_in_ns1, Subject.service_account("ns2", "any"), "get", "pods", "ns1")
    every_sa = rb_role(rules, subjects=[group("system:serviceaccounts")])
    assert can(every_sa, Subject.service_account("ns2", "any"), "get", "pods", "ns1")
    assert not can(every_sa, ALICE, "get", "pods", "ns1")
    authenticated = rb_role(rules, subjects=[group("system:authenticated")])
    assert can(authenticated, ALICE, "get", "pods", "ns1")
    assert can(authenticated, Subject.service_account("ns2", "any"), "get", "pods", "ns1")


# --- aggregation and non-resource URLs -------------------------------------------------


def test_aggregated_cluster_role():
    objs = [
        role("agg", [], aggregate=[{"matchLabels": {"rbac.example.com/aggregate-to-view": "true"}}]),
        role("piece", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
             labels={"rbac.example.com/aggregate-to-view": "true"}),
        role("other", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        binding("b", "ClusterRole", "agg", [group("team-a")], namespace="ns1"),
    ]
    assert can(objs, ALICE, "get", "pods", "ns1")
    assert not can(objs, ALICE, "get", "secrets", "ns1")


def test_non_resource_urls():
    objs = [
        role("urls", [{"nonResourceURLs": ["/healthz", "/metrics/*"], "verbs": ["get"]}]),
        binding("b", "ClusterRole", "urls", [group("team-a")]),
    ]
    authorizer = Authorizer(objs)
    assert authorizer.allowed(ALICE, Request("get", path="/healthz"))
    assert authorizer.allowed(ALICE, Request("get", path="/metrics/cadvisor"))
    assert not authorizer.allowed(ALICE, Request("get", path="/api"))
    assert not authorizer.allowed(ALICE, Request("post", path="/healthz"))


def test_request_parsing():
    assert Request.parse("get", "pods/log", "ns") == Request("get", "pods", "log", "", "ns")
    assert Request.parse("update", "deployments.apps/scale", "ns") == Request("update", "deployments", "scale", "apps", "ns")
    assert Request.parse("bind", "clusterroles.rbac.authorization.k8s.io") == Request(
        "bind", "clusterroles", "", "rbac.authorization.k8s.io", None
    )
