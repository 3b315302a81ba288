"""ValidatingAdmissionPolicies, decided for the requests the RBAC table names an object of:
a CONNECT to a pod's subresource (port-forward, proxy, exec, attach), whose admission
request carries the pod's name and no pod object.

As the API server's policy plugin does (staging/src/k8s.io/apiserver/pkg/admission/plugin/
policy/validating): a policy applies through each of its bindings whose validationActions
include Deny; it matches a request when one of its resourceRules matches (group, version,
operation, resource with subresource) and its namespaceSelector selects the namespace
(by its `kubernetes.io/metadata.name` label, the one label every namespace has); then
when every matchCondition is true; and it denies when any validation is false. The CEL is
evaluated by cel-python, a CEL implementation, not re-read by hand.

Not modelled: a binding's own matchResources and paramRef, objectSelector, and policies
that read `object` (a CONNECT has none here); matchPolicy Equivalent vs Exact is moot for
the core pods resource.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import celpy
import celpy.adapter

from tests.isolation.rbac import Request, Subject, selector_matches

# The authorization verb of each pod subresource a client opens a stream on; admission
# sees all of them as CONNECT.
CONNECT_SUBRESOURCES = {"portforward", "proxy", "exec", "attach"}


@dataclasses.dataclass(frozen=True)
class Denial:
    policy: str
    message: str


def _admission_request(who: Subject, request: Request) -> dict:
    return {
        "operation": "CONNECT",
        "name": request.name,
        "namespace": request.namespace,
        "resource": {"group": request.api_group, "version": "v1", "resource": request.resource},
        "subResource": request.subresource,
        "userInfo": {"username": who.user, "groups": sorted(who.groups)},
    }


def _cel(expression: str, activation: dict) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(expression))
    result = program.evaluate({name: celpy.adapter.json_to_cel(value) for name, value in activation.items()})
    if not isinstance(result, celpy.celtypes.BoolType):
        raise AssertionError(f"CEL {expression!r} gave {result!r}, not a boolean")
    return bool(result)


def _rule_matches(rule: dict, request: dict) -> bool:
    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    resource = request["resource"]["resource"] + (f"/{request['subResource']}" if request["subResource"] else "")
    return (has(rule.get("apiGroups", []), request["resource"]["group"])
            and has(rule.get("apiVersions", []), request["resource"]["version"])
            and has(rule.get("operations", []), request["operation"])
            and has(rule.get("resources", []), resource))


class Admission:
    def __init__(self, objects: Iterable[dict]):
        objects = list(objects)
        self.policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"}
        self.bindings = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]

    def denial(self, who: Subject, request: Request) -> Denial | None:
        """The first policy that denies this CONNECT request, or None when all admit it."""
        if request.resource != "pods" or request.subresource not in CONNECT_SUBRESOURCES or request.verb != "create":
            raise ValueError(f"only CONNECT requests to a pod's subresource are modelled, not {request}")
        if not request.name or not request.namespace:
            raise ValueError("a CONNECT names its pod and namespace")
        admission = _admission_request(who, request)
        for binding in self.bindings:
            if "Deny" not in binding["spec"].get("validationActions", []):
                continue
            policy = self.policies[binding["spec"]["policyName"]]["spec"]
            constraints = policy.get("matchConstraints", {})
            namespace_labels = {"kubernetes.io/metadata.name": request.namespace}
            if not selector_matches(constraints.get("namespaceSelector", {}), namespace_labels):
                continue
            if not any(_rule_matches(rule, admission) for rule in constraints.get("resourceRules", [])):
                continue
            activation = {"request": admission}
            if not all(_cel(c["expression"], activation) for c in policy.get("matchConditions", [])):
                continue
            for validation in policy.get("validations", []):
                if not _cel(validation["expression"], activation):
                    return Denial(binding["spec"]["policyName"], validation.get("message", ""))
        return None
