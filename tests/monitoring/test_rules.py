"""The alert rules are code: promtool checks them and runs their unit tests
(rules-test.yaml), in which each alert fires on a synthetic failure and stays silent on a
healthy and an idle service."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.monitoring.conftest import RULES_TEST, alert_rules, prometheus_rule, rule_groups_file, tool

pytestmark = pytest.mark.manifests


def promtool(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool", "prometheus"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules(tmp_path):
    result = promtool("check", "rules", rule_groups_file(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(tmp_path):
    rule_groups_file(tmp_path)
    shutil.copy(RULES_TEST, tmp_path)
    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent():
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired, silent_when_healthy = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent_when_healthy if case["name"] == "healthy" else set()).add(
                check["alertname"]
            )
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - silent_when_healthy == set(), "alerts never shown silent on the healthy series"


def test_the_unit_tests_catch_a_broken_threshold(tmp_path):
    """A test that cannot fail proves nothing: loosen one threshold, promtool must fail."""
    rule = prometheus_rule()
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if r.get("alert") == "PaymentChargeLatencyHigh":
                r["expr"] = r["expr"].replace("> 0.5", "> 5")
    (tmp_path / "payment-rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(RULES_TEST, tmp_path)
    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "PaymentChargeLatencyHigh" in result.stdout + result.stderr
