"""The monitoring objects: Prometheus Operator resources validated by their maintained
models, the kube-prometheus-stack release by Flux's, and the pieces that must agree with
each other (ports, labels, runbook links, the dashboard's metric names)."""

from __future__ import annotations

import copy
import re

import pydantic
import pytest
import yaml

from tests.kube import REPO, find, render
from tests.models import MODELS, validate_strictly
from tests.monitoring.conftest import alert_rules, dashboard, dashboard_queries, metric_names

pytestmark = pytest.mark.manifests

RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/example-org/antaeus-payment/blob/main/docs/runbook.md"


@pytest.fixture(scope="module")
def production() -> list[dict]:
    return render("overlays/production")


def controller() -> list[dict]:
    return render("infrastructure/production/controllers")


def test_custom_resources_validate_with_no_unknown_fields(production):
    custom = [o for o in production + controller() if (o["apiVersion"], o["kind"]) in MODELS]
    assert {o["kind"] for o in custom} == {"PodMonitor", "PrometheusRule", "HelmRelease", "HelmRepository"}
    for obj in custom:
        validate_strictly(obj)


def test_strict_validation_rejects_an_unknown_field(production):
    monitor = copy.deepcopy(find(production, "PodMonitor", "payment", "payment"))
    monitor["spec"]["podMetricsEndpoints"][0]["targetport"] = "metrics"  # a typo of targetPort
    with pytest.raises(pydantic.ValidationError, match="targetport"):
        validate_strictly(monitor)


def test_staging_renders_only_built_in_kinds():
    """`kubectl apply -k overlays/staging` works on a cluster without the Prometheus Operator."""
    groups = {o["apiVersion"].split("/")[0] for o in render("overlays/staging") if "/" in o["apiVersion"]}
    assert not any(g.endswith(("coreos.com", "fluxcd.io")) for g in groups), groups


def test_pod_monitor_scrapes_the_metrics_port_the_pod_serves(production):
    monitor = find(production, "PodMonitor", "payment", "payment")
    deployment = find(production, "Deployment", "payment", "payment")
    template = deployment["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # The service's container serves the metrics; nginx (the proxy container) the charges.
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    ports = {p["name"]: p["containerPort"] for p in containers["payment"]["ports"]}
    charge_port = {p["name"]: p["containerPort"] for p in containers["proxy"]["ports"]}["http"]
    metrics_port = ports[endpoint["port"]]
    assert endpoint["port"] == "metrics" and metrics_port not in (charge_port, ports["app"])
    config = next(o for o in production if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("payment-config"))
    assert config["data"]["METRICS_PORT"] == str(metrics_port)
    # The job label the rules and the dashboard select on.
    assert {"action": "replace", "targetLabel": "job", "replacement": "payment"} in endpoint["relabelings"]
    # The scrape policy opens exactly that port.
    policy = find(production, "NetworkPolicy", "payment-metrics-from-prometheus", "payment")
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": metrics_port}]


def reserved_prometheus_pod_labels() -> dict[str, str]:
    """The labels the Prometheus Operator puts on every Prometheus pod with a fixed value,
    as the Prometheus CRD documents them (spec.podMetadata), read from the maintained model."""
    import ast
    import inspect

    from cloudcoil.models.prometheus_operator import v1

    body = ast.parse(inspect.getsource(v1.PrometheusSpec)).body[0].body
    (doc,) = [
        after.value.value for field, after in zip(body, body[1:])
        if isinstance(field, ast.AnnAssign) and field.target.id == "pod_metadata"
    ]
    return dict(re.findall(r'\* "([^"]+)" label, set to "([^"]+)"', doc))


def test_scrape_policy_selects_prometheus_pods_by_a_label_the_operator_reserves(production):
    """kube-prometheus-stack's Prometheus pods are made by the operator: the policy must select
    them by a label the operator always sets (a chart's own labels are not on those pods)."""
    reserved = reserved_prometheus_pod_labels()
    assert reserved.get("app.kubernetes.io/managed-by") == "prometheus-operator"  # the docs were read
    policy = find(production, "NetworkPolicy", "payment-metrics-from-prometheus", "payment")
    (peer,) = policy["spec"]["ingress"][0]["from"]
    assert peer["podSelector"]["matchLabels"].items() <= reserved.items()


def test_every_alert_has_a_severity_and_a_runbook_section():
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"{RUNBOOK_URL}#{rule['alert'].lower()}", url
        assert rule["alert"].lower() in anchors, f"docs/runbook.md has no section {rule['alert']}"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_rules_and_dashboard_select_the_scrape_job():
    for title, expr in dashboard_queries() + [(r["alert"], r["expr"]) for r in alert_rules()]:
        for selector in re.findall(r"\b[a-z_:]+\{[^}]*\}|\b[a-z_:]+(?=\[)", expr):
            assert 'job="payment"' in selector, f"{title}: {selector} does not select job=\"payment\""


def exported_names() -> set[str]:
    """Every sample name the service's own metric objects can export (in-process registry)."""
    from prometheus_client import REGISTRY

    import payment_app.metrics  # noqa: F401  (registers them)

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def test_dashboard_queries_name_only_exported_metrics():
    worker = {f"payment_worker_{name}" for name in ("resident_memory_bytes", "cpu_seconds_total", "open_fds")}
    exported = exported_names() | worker | {"up", "process_resident_memory_bytes", "process_cpu_seconds_total"}
    queries = dashboard_queries()
    assert len(queries) >= 10
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported"
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= exported, rule["alert"]


def test_metric_name_extraction_is_not_fooled():
    assert metric_names('sum by (le) (rate(a_bucket{job="x",le="0.5"}[5m])) / scalar(max(b)) > 0.5 and c offset 5m') == {
        "a_bucket", "b", "c"
    }
    assert metric_names("histogram_quantile(0.99, sum without (pod) (rate(x_bucket[1m])))") == {"x_bucket"}


def test_dashboard_shows_what_the_issue_asks(production):
    titles = {panel["title"] for panel in dashboard()["panels"]}
    exprs = " ".join(expr for _, expr in dashboard_queries())
    assert {"Charges per second by outcome", "Success share against the configured rate",
            "Charge latency percentiles", "Refused charges by error code", "Ready"} <= titles
    assert "payment_success_rate_configured" in exprs and "histogram_quantile(0.99" in exprs
    config = find(production, "ConfigMap", "payment-dashboard", "payment")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(config["data"]["payment.json"])["uid"] == dashboard()["uid"]


def test_kube_prometheus_stack_is_pinned_and_selects_every_monitor():
    release = find(controller(), "HelmRelease", "kube-prometheus-stack", "flux-system")
    assert re.fullmatch(r"\d+\.\d+\.\d+", release["spec"]["chart"]["spec"]["version"])
    spec = release["spec"]["values"]["prometheus"]["prometheusSpec"]
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    sidecar = release["spec"]["values"]["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"], sidecar["searchNamespace"]) == ("grafana_dashboard", "1", "ALL")


def test_grafana_reads_config_maps_but_no_secret_anywhere():
    """The grafana chart's own ClusterRole reads every Secret in the cluster whenever a
    sidecar is on; the release names a ClusterRole of ours that reads ConfigMaps only."""
    grafana = find(controller(), "HelmRelease", "kube-prometheus-stack", "flux-system")["spec"]["values"]["grafana"]
    role = find(render("infrastructure/configs"), "ClusterRole", grafana["rbac"]["useExistingClusterRole"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    for sidecar in ("dashboards", "datasources"):
        assert grafana["sidecar"][sidecar]["resource"] == "configmap", sidecar


def test_kube_state_metrics_lists_no_secret():
    """Its `secrets` collector lists every Secret in the cluster (values included) to
    count them; the release keeps the chart's other default collectors."""
    values = find(controller(), "HelmRelease", "kube-prometheus-stack", "flux-system")["spec"]["values"]
    collectors = values["kube-state-metrics"]["collectors"]
    assert "secrets" not in collectors
    assert {"deployments", "pods", "horizontalpodautoscalers", "poddisruptionbudgets", "jobs"} <= set(collectors)
