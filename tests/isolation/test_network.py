"""Network isolation of both overlays, decided by network-config-analyzer (see netpol.py).

nca runs once per environment (all queries in one scheme); each test reads its own
query's parsed output, so a failure names the statement that broke and nca's
counter-example connection.
"""

from __future__ import annotations

import pytest

from tests.isolation.netpol import (
    CHECKS,
    ENVIRONMENTS,
    MUTATIONS,
    analyse,
    checks_for,
    connections_in,
    connectivity_lines,
    expected_connectivity,
    mutation_cases,
)

pytestmark = pytest.mark.manifests


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_nca_ran_every_query_as_expected_without_warnings(env):
    analysis = analyse(env)
    # nca's exit code is the number of queries with an unexpected result plus configs
    # with unexpected warnings (the scheme expects 0 warnings for the overlay: nca warns,
    # for instance, about a selector that matches nothing or a redundant one).
    assert analysis.returncode == 0, analysis.log
    assert "Warning" not in analysis.log, analysis.log
    assert not analysis.mutation_errors
    expected_queries = len(checks_for(env)) + len(mutation_cases(env)) + len(mutation_cases(env, holds=True))
    assert len(analysis.results) == expected_queries, analysis.log


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_connectivity_map_matches_expected_file(env):
    actual = connectivity_lines(analyse(env).connectivity)
    expected = expected_connectivity(env)
    assert actual, analyse(env).log
    missing, extra = sorted(expected - actual), sorted(actual - expected)
    assert not missing and not extra, (
        f"tests/isolation/expected/{env}-connectivity.txt differs from nca's map:\n"
        + "".join(f"  expected, not allowed any more: {line}\n" for line in missing)
        + "".join(f"  allowed, not expected: {line}\n" for line in extra)
    )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_connectivity_map_payment_is_reached_only_by_antaeus_and_prometheus(env):
    # The headline property, read straight from the map (independent of the expected file).
    lines = connectivity_lines(analyse(env).connectivity)
    into_payment = [line for line in lines if line.split(" => ")[1].startswith("payment/payment[")]
    expected = ["antaeus/antaeus[Deployment] => payment/payment[Deployment] : {protocols:TCP,dst_ports:8000}"]
    if env == "production":  # monitoring on: Prometheus, on the metrics port only
        expected.append("monitoring/prometheus[Pod] => payment/payment[Deployment] : {protocols:TCP,dst_ports:9000}")
    # nca's order is not stable: compare as sets.
    assert sorted(into_payment) == sorted(expected)
    # Nothing else of the payment namespace is reachable, but production's database pods.
    others = {line.split(" => ")[1].split(" : ")[0] for line in lines if line.split(" => ")[1].startswith("payment/")}
    expected_targets = {"payment/payment[Deployment]"}
    if env == "production":
        expected_targets |= {"payment/payment-db-1[Pod]", "payment/payment-db-2[Pod]"}
    assert others == expected_targets


def test_connectivity_map_database_is_reached_only_by_its_clients_peers_and_operator():
    lines = connectivity_lines(analyse("production").connectivity)
    into_db = sorted(line for line in lines if " => payment/payment-db-" in line)
    assert into_db == sorted([
        f"{src} => payment/payment-db-{n}[Pod] : {conn}"
        for n in (1, 2)
        for src, conn in (
            ("cnpg-system/cloudnative-pg[Pod]", "{protocols:TCP,dst_ports:8000}"),
            ("payment/payment[Deployment]", "{protocols:TCP,dst_ports:5432}"),
            ("payment/payment-migrate[Job]", "{protocols:TCP,dst_ports:5432}"),
            (f"payment/payment-db-{3 - n}[Pod]", "{protocols:TCP,dst_ports:5432,8000}"),
        )
    ])


def _check_cases():
    return [pytest.param(env, check, id=f"{env}-{check.name}") for env in ENVIRONMENTS for check in checks_for(env)]


@pytest.mark.parametrize(("env", "check"), _check_cases())
def test_statement_holds(env, check):
    result = analyse(env).result(check)
    counter_examples = connections_in(result)
    assert result["numerical_result"] == 0 and not counter_examples, (
        f"{env}: the overlay does not {check.kind.rstrip('s')} what tests/isolation/specs/{check.spec}.yaml "
        f"describes: {result['textual_result']}\ncounter-examples (src, dst, connection): {counter_examples}"
    )
    verdict = "permits all connections specified" if check.kind == "permits" else "forbids connections specified"
    assert verdict in result["textual_result"], result


def _mutation_cases():
    return [
        pytest.param(env, mutation, check, id=f"{env}-{mutation.name}-{check.name}")
        for env in ENVIRONMENTS
        for mutation, check in mutation_cases(env)
    ]


@pytest.mark.parametrize(("env", "mutation", "check"), _mutation_cases())
def test_statement_catches_broken_policies(env, mutation, check):
    """The same statement, run against a deliberately broken copy of the policies, fails:
    the checks above can fail, and fail for the reason they are meant to."""
    result = analyse(env).result(check, mutation)
    assert result["numerical_result"] == 1, result
    assert connections_in(result), f"nca gave no counter-example: {result}"


def _holding_cases():
    return [
        pytest.param(env, mutation, check, id=f"{env}-{mutation.name}-{check.name}")
        for env in ENVIRONMENTS
        for mutation, check in mutation_cases(env, holds=True)
    ]


@pytest.mark.parametrize(("env", "mutation", "check"), _holding_cases())
def test_statement_survives_a_one_sided_mistake(env, mutation, check):
    """Both ends are closed: a mistake on one side alone does not open the connection."""
    result = analyse(env).result(check, mutation)
    assert result["numerical_result"] == 0 and not connections_in(result), result


def test_every_mutation_is_checked_and_names_real_checks():
    names = {check.name for check in CHECKS}
    for mutation in MUTATIONS:
        assert set(mutation.caught_by) | set(mutation.still_holds) <= names, mutation.name
    checked = {
        mutation.name for env in ENVIRONMENTS for holds in (False, True) for mutation, _ in mutation_cases(env, holds)
    }
    assert checked == {mutation.name for mutation in MUTATIONS}
