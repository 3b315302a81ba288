"""Network isolation, decided by a real policy engine: network-config-analyzer (nca).

nca is static analysis: it reads manifests and computes which connections the
NetworkPolicies (and Ingress objects) allow, without a cluster and without sending a
packet. For each environment this module

1. renders the whole overlay (`overlays/<env>`: namespaces, policies, the real
   Deployments, Services and, in production, the Ingress) and adds the rest of a cluster
   from topology/cluster.yaml (cluster DNS, the ingress controller, and "attacker" pods);
2. writes one nca scheme file with every query: the full connectivity map, then
   `permits`/`forbids` checks of the overlay against the small specification policies in
   specs/ (a spec policy *describes* connections; nca proves the overlay allows all of
   them, or none of them), then the same checks against deliberately broken copies of
   the overlay (MUTATIONS), which must fail, so the checks are known to be able to fail;
3. runs nca once and returns the parsed per-query outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

from tests.kube import render

HERE = pathlib.Path(__file__).resolve().parent
SPECS = HERE / "specs"
EXPECTED = HERE / "expected"
TOPOLOGY = HERE / "topology" / "cluster.yaml"
# Pods only one environment has (production's database, created by the operator).
ENV_TOPOLOGY = {"production": HERE / "topology" / "production.yaml"}
# What else an environment's cluster applies beside its overlay that holds NetworkPolicies:
# production's edge authentication (oauth2-proxy's namespace).
ENV_RENDERS = {"production": ("infrastructure/auth",)}
ENVIRONMENTS = ("staging", "production")

TOPOLOGY_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Service"}
POLICY_KINDS = {"NetworkPolicy", "Ingress"}


@dataclasses.dataclass(frozen=True)
class Check:
    """One statement: the overlay `permits` (allows all of) or `forbids` (allows none of)
    the connections the spec policy in specs/<spec>.yaml describes."""

    kind: str  # "permits" | "forbids"
    spec: str
    envs: tuple[str, ...] = ENVIRONMENTS
    # "overlay": NetworkPolicies and Ingress objects; "netpol": NetworkPolicies only.
    config: str = "overlay"

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.spec}"


CHECKS = (
    # Only Antaeus talks to payment, and only on the service port.
    Check("permits", "antaeus-to-payment"),
    Check("forbids", "payment-other-ports"),
    Check("forbids", "default-namespace-to-payment"),
    Check("forbids", "antaeus-neighbour-to-payment"),
    Check("forbids", "antaeus-lookalike-to-payment"),
    Check("forbids", "only-antaeus-to-payment"),
    # Metrics (components/monitoring): Prometheus of the monitoring namespace reaches the
    # metrics port where monitoring is on, and nothing else; no one else reaches it.
    Check("permits", "prometheus-to-payment-metrics", envs=("production",)),
    Check("forbids", "prometheus-to-payment-metrics", envs=("staging",)),
    Check("forbids", "prometheus-to-payment-other-ports"),
    Check("forbids", "others-to-payment-metrics"),
    Check("forbids", "antaeus-to-payment-metrics"),
    # Payment talks to nothing but DNS.
    Check("forbids", "payment-to-internet"),
    Check("forbids", "payment-to-antaeus"),
    Check("forbids", "payment-egress-beyond-dns", envs=("staging",)),
    Check("permits", "dns-from-payment"),
    # Production's PostgreSQL: payment (and its migration Job) reach it on 5432, the
    # instances each other, the operator their status port; nothing else, either way.
    Check("permits", "payment-to-database", envs=("production",)),
    Check("permits", "database-replication", envs=("production",)),
    Check("permits", "operator-to-database", envs=("production",)),
    Check("forbids", "only-clients-to-database", envs=("production",)),
    Check("forbids", "only-operator-to-database-status", envs=("production",)),
    Check("forbids", "database-other-ports", envs=("production",)),
    Check("forbids", "payment-egress-beyond-dns-and-database", envs=("production",)),
    Check("forbids", "database-egress-beyond-peers-and-api", envs=("production",)),
    # Antaeus: DNS, payment, and public HTTP(S) for its start-up downloads only.
    Check("permits", "dns-from-antaeus"),
    Check("permits", "antaeus-to-internet-web"),
    Check("forbids", "antaeus-to-private-ranges"),
    Check("forbids", "antaeus-to-internet-other-ports"),
    Check("forbids", "antaeus-other-ports"),
    # The way in: a LoadBalancer in staging, the ingress controller in production.
    Check("permits", "outside-to-antaeus", envs=("staging",)),
    Check("forbids", "outside-to-antaeus", envs=("production",)),
    # nca models an Ingress object as the controller's allow-list (host antaeus.example.com
    # only), so the NetworkPolicy half of this path is checked without it; the
    # connectivity map shows the combined result.
    Check("permits", "ingress-controller-to-antaeus", envs=("production",), config="netpol"),
    Check("forbids", "other-pods-to-antaeus", envs=("production",)),
    # The edge: cert-manager's HTTP-01 solver is reachable from the controller during
    # issuance; the authentication gate reaches neither service.
    # (Checked on the NetworkPolicies alone, like the controller's path to Antaeus: nca's
    # model of the Ingress objects knows nothing of the solver's temporary Ingress.)
    Check("permits", "ingress-controller-to-acme-solver", envs=("production",), config="netpol"),
    Check("forbids", "auth-proxy-to-antaeus-and-payment"),
    # The gate itself (infrastructure/auth): asked by the controller alone, on its port;
    # it resolves names and reaches public HTTPS (the identity provider), nothing else.
    Check("permits", "ingress-controller-to-auth-proxy", envs=("production",), config="netpol"),
    Check("forbids", "others-to-auth-proxy", envs=("production",)),
    Check("forbids", "auth-proxy-other-ports", envs=("production",)),
    Check("permits", "dns-from-auth-proxy", envs=("production",)),
    Check("permits", "auth-proxy-to-identity-provider", envs=("production",)),
    Check("forbids", "auth-proxy-to-private-ranges", envs=("production",)),
    Check("forbids", "auth-proxy-to-internet-other-ports", envs=("production",)),
)


def _policy(policies: list[dict], namespace: str, name: str) -> dict:
    matches = [
        p
        for p in policies
        if p["kind"] == "NetworkPolicy" and p["metadata"]["namespace"] == namespace and p["metadata"]["name"] == name
    ]
    assert len(matches) == 1, f"expected one NetworkPolicy {namespace}/{name}, found {len(matches)}"
    return matches[0]


def _without(policies: list[dict], *names: tuple[str, str]) -> list[dict]:
    for namespace, name in names:
        _policy(policies, namespace, name)  # must exist: a typo here would test nothing
    return [
        p
        for p in policies
        if not (p["kind"] == "NetworkPolicy" and (p["metadata"]["namespace"], p["metadata"]["name"]) in names)
    ]


def _payment_ingress_rule(policies: list[dict]) -> dict:
    return _policy(policies, "payment", "payment-ingress-from-antaeus")["spec"]["ingress"][0]


def _any_namespace(policies: list[dict]) -> list[dict]:
    # Forgetting the namespace: any pod labelled `antaeus`, in any namespace.
    _payment_ingress_rule(policies)["from"][0]["namespaceSelector"] = {}
    return policies


def _whole_antaeus_namespace(policies: list[dict]) -> list[dict]:
    # "Allow the antaeus namespace": no pod selector on either side.
    del _payment_ingress_rule(policies)["from"][0]["podSelector"]
    _policy(policies, "antaeus", "antaeus-egress-payment")["spec"]["podSelector"] = {}
    return policies


def _payment_side_namespace_only(policies: list[dict]) -> list[dict]:
    # The payment side forgets its pod selector; Antaeus's egress side still holds.
    del _payment_ingress_rule(policies)["from"][0]["podSelector"]
    return policies


def _any_port(policies: list[dict]) -> list[dict]:
    # No port list on either side: every port of payment opens to Antaeus.
    del _payment_ingress_rule(policies)["ports"]
    del _policy(policies, "antaeus", "antaeus-egress-payment")["spec"]["egress"][0]["ports"]
    return policies


def _metrics_rule(policies: list[dict]) -> dict:
    return _policy(policies, "payment", "payment-metrics-from-prometheus")["spec"]["ingress"][0]


def _metrics_whole_monitoring_namespace(policies: list[dict]) -> list[dict]:
    # "Allow the monitoring namespace": Grafana and anything else there would scrape too.
    del _metrics_rule(policies)["from"][0]["podSelector"]
    return policies


def _metrics_any_port(policies: list[dict]) -> list[dict]:
    # No port list: Prometheus would reach the charge API too.
    del _metrics_rule(policies)["ports"]
    return policies


def _internet_without_except(policies: list[dict]) -> list[dict]:
    del _policy(policies, "antaeus", "antaeus-egress-internet")["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    return policies


def _antaeus_ingress_open(policies: list[dict]) -> list[dict]:
    # Every policy restricting ingress in the antaeus namespace gone (default deny included).
    names = [
        ("antaeus", p["metadata"]["name"])
        for p in policies
        if p["metadata"]["namespace"] == "antaeus" and "Ingress" in p["spec"].get("policyTypes", [])
    ]
    assert ("antaeus", "default-deny") in names
    return _without(policies, *names)


def _auth_proxy_whole_cluster(policies: list[dict]) -> list[dict]:
    # "Allow every namespace": any pod could ask oauth2-proxy, or probe its sign-in flow.
    rule = _policy(policies, "oauth2-proxy", "oauth2-proxy-from-ingress-controller")["spec"]["ingress"][0]
    rule["from"][0]["namespaceSelector"] = {}
    return policies


def _auth_proxy_egress_without_except(policies: list[dict]) -> list[dict]:
    rule = _policy(policies, "oauth2-proxy", "oauth2-proxy-egress-identity-provider")["spec"]["egress"][0]
    del rule["to"][0]["ipBlock"]["except"]
    return policies


def _database_rule(policies: list[dict], index: int) -> dict:
    return _policy(policies, "payment", "payment-db-ingress")["spec"]["ingress"][index]


def _operator_namespace_only(policies: list[dict]) -> list[dict]:
    # "Allow the operator's namespace": every pod of cnpg-system reaches the status port.
    rule = _database_rule(policies, 2)
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}], rule
    del rule["from"][0]["podSelector"]
    return policies


def _database_open_to_namespace(policies: list[dict]) -> list[dict]:
    # The client rule forgets its pod selector: any pod of the namespace on 5432. The
    # other pods' own egress (DNS only) still closes it.
    rule = _database_rule(policies, 0)
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}], rule
    rule["from"] = [{"podSelector": {}}]
    return policies


def _database_egress_any_port(policies: list[dict]) -> list[dict]:
    # The API server rule forgets its ports: every private address on every port.
    del _policy(policies, "payment", "payment-db-egress")["spec"]["egress"][1]["ports"]
    return policies


@dataclasses.dataclass(frozen=True)
class Mutation:
    """A broken copy of the overlay's NetworkPolicies, and the checks that must catch it
    (those of an environment's checks that apply there)."""

    name: str
    mutate: object  # Callable[[list[dict]], list[dict]]
    caught_by: tuple[str, ...]  # Check names that must FAIL on the mutant
    # Check names that must still HOLD on the mutant (defence in depth made visible).
    still_holds: tuple[str, ...] = ()
    # Where the policy it breaks exists.
    envs: tuple[str, ...] = ENVIRONMENTS


MUTATIONS = (
    Mutation(
        "any-namespace-labelled-antaeus",
        _any_namespace,
        ("forbids-antaeus-lookalike-to-payment", "forbids-only-antaeus-to-payment"),
    ),
    Mutation(
        "whole-antaeus-namespace",
        _whole_antaeus_namespace,
        ("forbids-antaeus-neighbour-to-payment", "forbids-only-antaeus-to-payment"),
    ),
    Mutation(
        "payment-side-namespace-only",
        _payment_side_namespace_only,
        caught_by=(),
        still_holds=("forbids-antaeus-neighbour-to-payment", "forbids-only-antaeus-to-payment"),
    ),
    Mutation("any-port-to-payment", _any_port, ("forbids-payment-other-ports",)),
    Mutation(
        "payment-without-egress-policies",
        lambda p: _without(p, ("payment", "default-deny"), ("payment", "allow-dns-egress")),
        ("forbids-payment-to-internet", "forbids-payment-egress-beyond-dns",
         "forbids-payment-egress-beyond-dns-and-database"),
    ),
    Mutation(
        "database-without-ingress-policy",
        lambda p: _without(p, ("payment", "payment-db-ingress")),
        ("permits-payment-to-database", "permits-database-replication", "permits-operator-to-database"),
    ),
    Mutation(
        "payment-without-database-egress",
        lambda p: _without(p, ("payment", "payment-egress-database")),
        ("permits-payment-to-database",),
    ),
    Mutation("operator-namespace-only", _operator_namespace_only, ("forbids-only-operator-to-database-status",)),
    Mutation(
        "database-open-to-namespace",
        _database_open_to_namespace,
        caught_by=(),
        still_holds=("forbids-only-clients-to-database",),
    ),
    Mutation("database-egress-any-port", _database_egress_any_port, ("forbids-database-egress-beyond-peers-and-api",)),
    Mutation(
        "payment-without-dns",
        lambda p: _without(p, ("payment", "allow-dns-egress")),
        ("permits-dns-from-payment",),
    ),
    Mutation(
        "payment-without-antaeus-ingress",
        lambda p: _without(p, ("payment", "payment-ingress-from-antaeus")),
        ("permits-antaeus-to-payment",),
    ),
    Mutation(
        "metrics-whole-monitoring-namespace",
        _metrics_whole_monitoring_namespace,
        ("forbids-others-to-payment-metrics", "forbids-only-antaeus-to-payment"),
        still_holds=("forbids-antaeus-to-payment-metrics",),
        envs=("production",),
    ),
    Mutation(
        "metrics-any-port",
        _metrics_any_port,
        ("forbids-prometheus-to-payment-other-ports", "forbids-payment-other-ports"),
        envs=("production",),
    ),
    Mutation(
        "without-metrics-policy",
        lambda p: _without(p, ("payment", "payment-metrics-from-prometheus")),
        ("permits-prometheus-to-payment-metrics",),
        envs=("production",),
    ),
    Mutation("internet-egress-without-except", _internet_without_except, ("forbids-antaeus-to-private-ranges",)),
    Mutation(
        "antaeus-ingress-open",
        _antaeus_ingress_open,
        ("forbids-antaeus-other-ports", "forbids-other-pods-to-antaeus", "forbids-auth-proxy-to-antaeus-and-payment"),
        envs=("staging",),
    ),
    # In production oauth2-proxy's own egress policies still keep it from Antaeus.
    Mutation(
        "antaeus-ingress-open-behind-auth-proxy-egress",
        _antaeus_ingress_open,
        ("forbids-antaeus-other-ports", "forbids-outside-to-antaeus", "forbids-other-pods-to-antaeus"),
        still_holds=("forbids-auth-proxy-to-antaeus-and-payment",),
        envs=("production",),
    ),
    Mutation("auth-proxy-ingress-whole-cluster", _auth_proxy_whole_cluster, ("forbids-others-to-auth-proxy",),
             envs=("production",)),
    Mutation(
        "auth-proxy-without-ingress-policy",
        lambda p: _without(p, ("oauth2-proxy", "oauth2-proxy-from-ingress-controller")),
        ("permits-ingress-controller-to-auth-proxy",),
        envs=("production",),
    ),
    Mutation("auth-proxy-egress-without-except", _auth_proxy_egress_without_except,
             ("forbids-auth-proxy-to-private-ranges",), envs=("production",)),
    Mutation(
        "auth-proxy-without-egress-policies",
        lambda p: _without(p, ("oauth2-proxy", "default-deny"), ("oauth2-proxy", "allow-dns-egress"),
                           ("oauth2-proxy", "oauth2-proxy-egress-identity-provider")),
        ("forbids-auth-proxy-to-private-ranges", "forbids-auth-proxy-to-internet-other-ports"),
        envs=("production",),
    ),
    Mutation(
        "without-acme-solver-ingress",
        lambda p: _without(p, ("antaeus", "acme-http01-solver-from-ingress-controller")),
        ("permits-ingress-controller-to-acme-solver",),
    ),
)


def checks_for(env: str) -> list[Check]:
    return [c for c in CHECKS if env in c.envs]


def mutation_cases(env: str, holds: bool = False) -> list[tuple[Mutation, Check]]:
    """(mutation, check) pairs where the check must fail on the mutant, or, with
    holds=True, where it must still hold."""
    by_name = {c.name: c for c in checks_for(env)}
    return [
        (m, by_name[name])
        for m in MUTATIONS
        if env in m.envs
        for name in (m.still_holds if holds else m.caught_by)
        if name in by_name
    ]


def _dump(path: pathlib.Path, docs: list[dict]) -> str:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path.name


def _query_name(check: Check, mutation: Mutation | None = None) -> str:
    return check.name if mutation is None else f"mutant-{mutation.name}-{check.name}"


@dataclasses.dataclass
class Analysis:
    env: str
    returncode: int
    log: str
    connectivity: list[str]
    results: dict[str, dict]  # query name -> nca's yaml result of that query
    mutation_errors: dict[str, str]  # mutations that could not be applied, and why

    def result(self, check: Check, mutation: Mutation | None = None) -> dict:
        if mutation is not None and mutation.name in self.mutation_errors:
            raise AssertionError(f"mutation {mutation.name} not applicable: {self.mutation_errors[mutation.name]}")
        name = _query_name(check, mutation)
        if name not in self.results:
            raise AssertionError(f"nca wrote no result for query {name}\n{self.log}")
        return self.results[name]


@functools.cache
def analyse(env: str) -> Analysis:
    """Render the overlay, run every query of the environment in one nca process."""
    objects = render(f"overlays/{env}") + [d for d in yaml.safe_load_all(TOPOLOGY.read_text()) if d]
    for path in ENV_RENDERS.get(env, ()):
        objects += render(path)
    if env in ENV_TOPOLOGY:
        objects += [d for d in yaml.safe_load_all(ENV_TOPOLOGY[env].read_text()) if d]
    # A namespace both rendered and in the topology (oauth2-proxy's) is listed once.
    namespaces = list({o["metadata"]["name"]: o for o in objects if o["kind"] == "Namespace"}.values())
    for ns in namespaces:
        # The API server sets this label on every namespace; the policies select by it.
        ns["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = ns["metadata"]["name"]
    workloads = [o for o in objects if o["kind"] in TOPOLOGY_KINDS]
    policies = [o for o in objects if o["kind"] in POLICY_KINDS]
    netpols = [o for o in policies if o["kind"] == "NetworkPolicy"]

    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"nca-{env}-"))
    (workdir / "out").mkdir()
    configs = [
        {"name": "overlay", "networkPolicyList": [_dump(workdir / "overlay.yaml", policies)], "expectedWarnings": 0},
        {"name": "netpol", "networkPolicyList": [_dump(workdir / "netpol.yaml", netpols)], "expectedWarnings": 0},
    ]
    queries: list[dict] = [
        {
            "name": "connectivity",
            "connectivityMap": ["overlay"],
            "outputConfiguration": {"outputFormat": "txt_no_fw_rules", "outputPath": "out/connectivity.txt"},
        }
    ]
    specs_used = sorted({c.spec for c in checks_for(env)})
    for spec in specs_used:
        configs.append({"name": f"spec-{spec}", "networkPolicyList": [str(SPECS / f"{spec}.yaml")]})

    def query(name: str, check: Check, config: str, expected: int) -> dict:
        return {
            "name": name,
            check.kind: [config, f"spec-{check.spec}"],
            "expected": expected,
            "outputConfiguration": {"outputFormat": "yaml", "outputPath": f"out/{name}.yaml"},
        }

    for check in checks_for(env):
        queries.append(query(_query_name(check), check, check.config, 0))
    mutation_errors = {}
    used = {m.name for holds in (False, True) for m, _ in mutation_cases(env, holds)}
    for mutation in MUTATIONS:
        if mutation.name not in used:
            continue  # breaks a policy this environment does not have (production's database, edge, metrics)
        try:
            mutated = mutation.mutate(copy.deepcopy(netpols))
        except (AssertionError, KeyError, IndexError, TypeError, ValueError) as error:
            # The policy it breaks has changed shape: only this mutation's tests fail.
            mutation_errors[mutation.name] = f"{type(error).__name__}: {error}"
            continue
        config = f"mutant-{mutation.name}"
        configs.append({"name": config, "networkPolicyList": [_dump(workdir / f"{config}.yaml", mutated)]})
    for holds in (False, True):
        for mutation, check in mutation_cases(env, holds):
            if mutation.name not in mutation_errors:
                queries.append(query(_query_name(check, mutation), check, f"mutant-{mutation.name}", 0 if holds else 1))

    scheme = {
        "namespaceList": _dump(workdir / "namespaces.yaml", namespaces),
        "podList": _dump(workdir / "workloads.yaml", workloads),
        "networkConfigList": configs,
        "queries": queries,
    }
    (workdir / "scheme.yaml").write_text(yaml.safe_dump(scheme, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "nca", "--scheme", "scheme.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = f"nca --scheme {workdir / 'scheme.yaml'} (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    connectivity_file = workdir / "out" / "connectivity.txt"
    connectivity = connectivity_file.read_text().splitlines() if connectivity_file.exists() else []
    results = {}
    for q in queries[1:]:
        out = workdir / "out" / f"{q['name']}.yaml"
        if out.exists():
            (results[q["name"]],) = yaml.safe_load(out.read_text())
    if proc.returncode == 0:
        shutil.rmtree(workdir)  # kept when nca reports a problem: the log names the scheme
    return Analysis(env, proc.returncode, log, connectivity, results, mutation_errors)


def connectivity_lines(lines: list[str]) -> set[str]:
    """The `src => dst : connections` lines of a connectivity map (comments and blanks dropped)."""
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def expected_connectivity(env: str) -> set[str]:
    return connectivity_lines((EXPECTED / f"{env}-connectivity.txt").read_text().splitlines())


def connections_in(result: dict) -> list[tuple[str, str, str]]:
    """(src, dst, conn) triples of a permits/forbids explanation (the counter-examples)."""
    found = []
    for explanation in result.get("explanation", []):
        for conn in explanation.get("connections", []):
            for src in conn["src"]:
                for dst in conn["dst"]:
                    found.append((src, dst, conn["conn"]))
    return found
