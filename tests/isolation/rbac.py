"""A small RBAC authorizer: decides requests against Role/ClusterRole/(Cluster)RoleBinding
objects the way the Kubernetes API server's RBAC authorizer does.

No API server is available where these tests run, so the rendered manifests are
evaluated here. The matching rules follow Kubernetes's
plugin/pkg/auth/authorizer/rbac (RuleAllows, appliesTo) and
pkg/apis/rbac/v1/evaluation_helpers.go (VerbMatches, APIGroupMatches, ResourceMatches,
ResourceNameMatches, NonResourceURLMatches):

- rules are additive, there is no deny: a request is allowed if any rule of any role
  bound to the subject allows it;
- a rule matches if its verbs, apiGroups and resources all match (``*`` matches
  anything), and, when it lists resourceNames, the request names one of them (so a rule
  with resourceNames never allows list/watch of the collection, nor create);
- a subresource request (``pods/log``) matches a rule resource ``pods/log``, ``*/log``
  or ``*``, never plain ``pods``;
- a RoleBinding grants its Role's, or its ClusterRole's, rules only in the binding's
  namespace; a ClusterRoleBinding grants its ClusterRole's rules in every namespace and
  at cluster scope; cluster-scoped requests (Namespaces, ClusterRoles, ...) and
  all-namespaces requests are decided by ClusterRoleBindings only;
- subjects: User by name, Group by membership, ServiceAccount by its user name
  ``system:serviceaccount:<ns>:<name>`` (an empty subject namespace means the binding's);
  a service account's requests carry the groups ``system:serviceaccounts``,
  ``system:serviceaccounts:<ns>`` and ``system:authenticated``;
- an aggregated ClusterRole's rules are those of every ClusterRole its selectors match.

Not modelled: the bootstrap roles a real cluster adds (system:basic-user,
system:discovery...), other authorizers (Node, webhooks), and admission.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


@dataclasses.dataclass(frozen=True)
class Subject:
    """Who is asking: a user name and the groups the authenticator gave it."""

    user: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def member_of(cls, *groups: str, user: str = "jane") -> Subject:
        return cls(user, frozenset({*groups, "system:authenticated"}))

    @classmethod
    def service_account(cls, namespace: str, name: str) -> Subject:
        return cls(
            f"system:serviceaccount:{namespace}:{name}",
            frozenset({"system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"}),
        )

    @classmethod
    def parse(cls, text: str) -> Subject:
        """``group:<name>``, ``sa:<namespace>:<name>`` or ``user:<name>``."""
        kind, _, rest = text.partition(":")
        if kind == "group":
            return cls.member_of(rest)
        if kind == "sa":
            namespace, _, name = rest.partition(":")
            return cls.service_account(namespace, name)
        if kind == "user":
            return cls(rest, frozenset({"system:authenticated"}))
        raise ValueError(f"unknown subject {text!r}")


@dataclasses.dataclass(frozen=True)
class Request:
    """What is asked. ``namespace=None`` is a cluster-scoped (or all-namespaces) request;
    ``path`` makes it a non-resource request (``/healthz``)."""

    verb: str
    resource: str = ""
    subresource: str = ""
    api_group: str = ""
    namespace: str | None = None
    name: str = ""
    path: str | None = None

    @classmethod
    def parse(cls, verb: str, resource: str, namespace: str | None = None, name: str = "") -> Request:
        """``resource`` as kubectl writes it: ``pods``, ``pods/log``, ``deployments.apps``,
        ``deployments.apps/scale``, ``roles.rbac.authorization.k8s.io``."""
        resource, _, subresource = resource.partition("/")
        resource, _, group = resource.partition(".")
        return cls(verb, resource, subresource, group, namespace, name)

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def verb_matches(rule: dict, verb: str) -> bool:
    return any(v in ("*", verb) for v in rule.get("verbs") or [])


def api_group_matches(rule: dict, group: str) -> bool:
    return any(g in ("*", group) for g in rule.get("apiGroups") or [])


def resource_matches(rule: dict, combined: str, subresource: str) -> bool:
    for resource in rule.get("resources") or []:
        if resource in ("*", combined):
            return True
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: dict, name: str) -> bool:
    names = rule.get("resourceNames") or []
    return not names or name in names


def non_resource_url_matches(rule: dict, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url in ("*", path):
            return True
        if url.endswith("*") and path.startswith(url[:-1]):
            return True
    return False


def rule_allows(rule: dict, request: Request) -> bool:
    if request.path is not None:
        return verb_matches(rule, request.verb) and non_resource_url_matches(rule, request.path)
    return (
        verb_matches(rule, request.verb)
        and api_group_matches(rule, request.api_group)
        and resource_matches(rule, request.combined_resource, request.subresource)
        and resource_name_matches(rule, request.name)
    )


def applies_to(subject_ref: dict, who: Subject, binding_namespace: str) -> bool:
    kind, name = subject_ref.get("kind"), subject_ref.get("name")
    if kind == "User":
        return who.user == name
    if kind == "Group":
        return name in who.groups
    if kind == "ServiceAccount":
        namespace = subject_ref.get("namespace") or binding_namespace
        return bool(namespace) and who.user == f"system:serviceaccount:{namespace}:{name}"
    return False


def selector_matches(selector: dict, labels: dict) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


class Authorizer:
    def __init__(self, objects: Iterable[dict]):
        objects = [o for o in objects if o.get("kind") in RBAC_KINDS]
        self.roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == "Role"}
        self.cluster_roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
        self.role_bindings = [o for o in objects if o["kind"] == "RoleBinding"]
        self.cluster_role_bindings = [o for o in objects if o["kind"] == "ClusterRoleBinding"]

    def cluster_role_rules(self, name: str) -> list[dict]:
        role = self.cluster_roles.get(name)
        if role is None:
            return []  # a binding to a missing role grants nothing
        aggregation = role.get("aggregationRule")
        if aggregation:
            rules = []
            for other in self.cluster_roles.values():
                if other is role or other.get("aggregationRule"):
                    continue
                labels = other["metadata"].get("labels") or {}
                if any(selector_matches(s, labels) for s in aggregation.get("clusterRoleSelectors") or []):
                    rules.extend(other.get("rules") or [])
            return rules
        return list(role.get("rules") or [])

    def _role_ref_rules(self, binding: dict) -> list[dict]:
        ref = binding["roleRef"]
        if ref["kind"] == "ClusterRole":
            return self.cluster_role_rules(ref["name"])
        if ref["kind"] == "Role" and binding["kind"] == "RoleBinding":
            role = self.roles.get((binding["metadata"]["namespace"], ref["name"]))
            return list(role.get("rules") or []) if role else []
        return []

    def rules_for(self, who: Subject, namespace: str | None) -> Iterator[dict]:
        for binding in self.cluster_role_bindings:
            if any(applies_to(s, who, "") for s in binding.get("subjects") or []):
                yield from self._role_ref_rules(binding)
        if namespace:
            for binding in self.role_bindings:
                binding_namespace = binding["metadata"]["namespace"]
                if binding_namespace != namespace:
                    continue
                if any(applies_to(s, who, binding_namespace) for s in binding.get("subjects") or []):
                    yield from self._role_ref_rules(binding)

    def allowed(self, who: Subject, request: Request) -> bool:
        namespace = None if request.path is not None else request.namespace
        return any(rule_allows(rule, request) for rule in self.rules_for(who, namespace))
