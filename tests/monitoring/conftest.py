"""Shared by the monitoring tests: the rules, the dashboard, PromQL's metric names, tools."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from tests.kube import REPO

COMPONENT = REPO / "components" / "monitoring"
RULES_TEST = REPO / "tests" / "monitoring" / "rules-test.yaml"
# Grafana's own variables, as the dashboard's queries use them, with values a test can run.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


def tool(name: str, package: str) -> str:
    """An external program the test needs; missing, the test fails and says how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install Debian's `{package}` package (.ci/run does)", pytrace=False)
    return path


def prometheus_rule() -> dict:
    return yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())


def rule_groups_file(directory) -> str:
    """The PrometheusRule's groups as a plain Prometheus rules file, as the operator hands them over."""
    path = directory / "payment-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": prometheus_rule()["spec"]["groups"]}, sort_keys=False))
    return str(path)


def alert_rules() -> list[dict]:
    return [rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict:
    return json.loads((COMPONENT / "dashboards" / "payment.json").read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] for target in panel["targets"]]


def runnable(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or label names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):  # not "5m" or "1e3"
        following = text[match.end():].lstrip()[:1]
        if following != "(" and match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def selectors(expr: str) -> list[str]:
    """Every vector selector of an expression (metric name and its matchers)."""
    found = []
    for name in sorted(metric_names(expr)):
        for match in re.finditer(rf"\b{re.escape(name)}\b(\{{[^}}]*\}})?", expr):
            found.append(name + (match.group(1) or ""))
    return sorted(set(found))
