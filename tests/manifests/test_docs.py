"""The docs name paths, objects, commands and variables that exist, and document every
variable the code reads (the second half); docs/deploy.md's snippets match the manifests."""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest
import yaml

from tests.kube import REPO, find, render
from tests.manifests.conftest import secret_file

pytestmark = pytest.mark.manifests

DOC = REPO / "docs" / "deploy.md"


def test_the_docs_have_no_machine_paths():
    for page in PAGES:
        assert not re.search(r"/(work|home|root|Users)/", page.read_text()), page


def test_guide_yaml_snippets_parse_and_name_the_secrets_production_reads():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    for block in blocks:
        yaml.safe_load(textwrap.dedent(block))
    # The Secret the guide has you create is the one production's payment pods read.
    deployment = find(render("overlays/production/payment"), "Deployment", "payment", "payment")
    secret, key = secret_file(deployment, container_env_value(deployment, "DJANGO_SECRET_KEY_FILE"))
    assert f"create secret generic {secret}" in DOC.read_text()
    assert f"--from-literal={key}=" in DOC.read_text()


def container_env_value(workload: dict, name: str) -> str:
    [value] = [e["value"] for e in workload["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == name]
    return value


@pytest.mark.parametrize("layer", ["infrastructure/production/controllers", "infrastructure/auth"])
def test_the_guide_installs_the_chart_versions_flux_pins(layer):
    """The kubectl path (section 2) installs every chart Flux installs, at its version."""
    text = DOC.read_text()
    releases = [o for o in render(layer) if o["kind"] == "HelmRelease"]
    assert releases
    for release in releases:
        chart = release["spec"]["chart"]["spec"]
        assert re.search(
            rf"helm upgrade --install {release['spec']['releaseName']} {chart['chart']} .*\n?.*"
            rf"--version {re.escape(chart['version'])}\b", text), release["metadata"]["name"]


def test_the_documented_flux_bootstrap_path_is_a_cluster_folder():
    for path in re.findall(r"--path=(\S+)", DOC.read_text()):
        assert (REPO / path).is_dir() and path.startswith("clusters/")


# --- Every page, both ways --------------------------------------------------------------
# What README.md and docs/*.md name (paths, links, make targets, commands and their
# options, environment variables) exists; every variable the service, its entrypoint and
# the harness read is documented. Each test lists every failure at once, with where it is,
# so a merge that adds a variable or renames a file shows the whole list to fix.

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_TRACKED = {".git", "var", "staticfiles", "node_modules", "__pycache__", ".pytest_cache"}
TOP = sorted(p.name for p in REPO.iterdir() if p.name not in NOT_TRACKED and not p.name.startswith(".venv"))
ANY_PATH = re.compile(
    r"(?<![\w/.$-])((?:" + "|".join(re.escape(name) for name in TOP) + r")(?:/[\w./<>*-]*[\w>*/])?)(?![\w-])"
)
# Written by a tool, not kept in git: the guide says which.
GENERATED = {"clusters/staging/flux-system/", "clusters/production/flux-system/"}
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Names in the docs that look like variables but are read by other software, or are no
# variable at all; each with where it belongs.
NOT_OURS = {
    "DJANGO_ALLOW_ASYNC_UNSAFE": "Django's own switch",
    "MALLOC_ARENA_MAX": "glibc's",
    "SO_REUSEPORT": "a socket option",
    "CAP_LINUX_IMMUTABLE": "a Linux capability",
    "CONN_MAX_AGE": "a key of Django's DATABASES setting",
    "CONN_HEALTH_CHECKS": "a key of Django's DATABASES setting",
    "ANTAEUS_TOKEN": "an example name for scripts/verify-deployment --token-env",
    "PROTOCOL_CASES": "the hostile-input table of tests/reliability/test_proxy.py",
    "AUTH_PASSWORD_VALIDATORS": "a Django setting (payment_project/settings.py), not a variable",
}
OTEL_SDK = re.compile(r"OTEL_[A-Z_]+")  # the OpenTelemetry SDK reads every OTEL_* variable itself
# Variables the operating system provides, which the harness passes on.
SYSTEM = {"PATH", "HOME"}
# Functions that read the variable named by their argument (and the suffixes they add).
ENV_HELPERS = {"_env_float": ("",), "_setting": ("", "_FILE")}
# Reads whose name is computed, each with what it is.
COMPUTED = {"args.token_env": "scripts/verify-deployment: the variable --token-env names"}


def _lines(page: pathlib.Path):
    for number, line in enumerate(page.read_text().splitlines(), 1):
        # Mermaid writes < and > as #lt; and #gt;.
        yield f"{page.relative_to(REPO)}:{number}", line.replace("#lt;", "<").replace("#gt;", ">")


def _code(page: pathlib.Path):
    """(where, text) of every inline code span and every line of a fenced block."""
    fenced = False
    for where, line in _lines(page):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield where, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield where, span


def _report(failures: list[str], what: str) -> None:
    assert not failures, f"{len(failures)} {what}:\n" + "\n".join(sorted(set(failures)))


def test_every_path_the_docs_name_exists():
    failures, seen = [], set()
    for page in PAGES:
        for where, line in _lines(page):
            for path in ANY_PATH.findall(re.sub(r"https?://\S+", "", line)):
                seen.add(path)
                if path in GENERATED or "<new>" in path:
                    continue
                for concrete in {path.replace("<env>", env) for env in ("staging", "production")}:
                    # A placeholder (<name>, *) stands for any entry of the folder before it.
                    fixed = re.split(r"[<*]", concrete)[0]
                    if not (REPO / fixed).exists() and not (REPO / fixed.rstrip(".")).exists():
                        failures.append(f"{where}: {concrete}")
    assert len(seen) > 100 and "benchmarks/charge.lua" in seen  # the pattern finds them
    _report(failures, "paths named in the docs do not exist")


def _anchors(page: pathlib.Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_between_the_docs_resolves():
    failures = []
    for page in PAGES:
        for where, line in _lines(page):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                resolved = (page.parent / path).resolve() if path else page
                if not resolved.exists():
                    failures.append(f"{where}: {target} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                    failures.append(f"{where}: {target} (no such heading)")
    _report(failures, "links in the docs lead nowhere")


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"^(?:export\s+)?(\w+)\s*[:?]?=\s*(.*)$", text, re.M))
    targets = set()
    for names in re.findall(r"^([^\s#:=][^:=]*?):(?!=)", text, re.M):
        for name in names.split():
            targets.add(re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), name))
    return targets - {".PHONY"}


def _options(source: pathlib.Path) -> set[str]:
    """The --options a module (every file of a package) or script declares."""
    files = sorted(source.rglob("*.py")) if source.is_dir() else [source]
    declared = {option for f in files for option in re.findall(r"""["'](--[a-z][\w-]*)""", f.read_text())}
    return declared | {"--help"}  # argparse's own


def _module(name: str) -> pathlib.Path | None:
    """The repository's file or package for `python -m name`; None if it is not ours."""
    base = REPO.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__main__.py").is_file():
        return base
    return None


def _check_options(where: str, command: str, args: str, source: pathlib.Path, failures: list[str]) -> None:
    declared = _options(source)
    for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", args):
        if option not in declared:
            failures.append(f"{where}: `{command}` has no option {option}")


def test_every_make_target_and_command_the_docs_name_exists():
    import importlib.util

    from django.core.management import get_commands

    targets, commands, failures = _make_targets(), get_commands(), []
    assert {"run", "test", "stress", "bench", ".venv/.installed"} <= targets
    assert {"migrate", "migrate_locked", "ensure_superuser"} <= set(commands)
    for page in PAGES:
        for where, code in _code(page):
            for target in re.findall(r"(?<![\w-])make\s+((?:[a-z][\w./-]*\s*)+)", code):
                for name in target.split():
                    if "=" not in name and name not in targets:
                        failures.append(f"{where}: make {name} (no such target in the Makefile)")
            for args in re.findall(r"BENCH_ARGS=\"([^\"]*)\"|BENCH_ARGS=(\S+)", code):
                _check_options(where, "make bench", " ".join(args), REPO / "benchmarks", failures)
            for name, args in re.findall(r"python3?(?:\.\d+)? -m ([\w.]+)([^|;&`]*)", code):
                source, top = _module(name), name.split(".")[0]
                if source is None and ((REPO / top).exists() or importlib.util.find_spec(top) is None):
                    failures.append(f"{where}: python -m {name} (no such module)")
                elif source is not None:
                    _check_options(where, f"python -m {name}", args, source, failures)
            for name, args in re.findall(r"(?<![\w/.-])(scripts/[\w-]+)([^|;&`]*)", code):
                if (REPO / name).is_file():
                    _check_options(where, name, args, REPO / name, failures)
            for name in re.findall(r"manage\.py\s+([a-z_]+)", code):
                if name not in commands:
                    failures.append(f"{where}: manage.py {name} (no such management command)")
    _report(failures, "targets, commands or options named in the docs do not exist")


def _python_reads(path: pathlib.Path) -> tuple[dict[str, str], list[str]]:
    """The environment variables a Python file reads by name, and the reads whose name is
    computed outside ENV_HELPERS and COMPUTED."""
    import ast

    tree = ast.parse(path.read_text())
    enclosing = {}
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(function):
            enclosing[node] = function.name  # inner functions come later and win
    reads, computed = {}, []
    where = lambda node: f"{path.relative_to(REPO)}:{node.lineno}"  # noqa: E731

    def read(node, argument, suffixes=("",)):
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            for suffix in suffixes:
                reads.setdefault(argument.value + suffix, where(node))
        elif enclosing.get(node) not in ENV_HELPERS and ast.unparse(argument) not in COMPUTED:
            computed.append(f"{where(node)}: {ast.unparse(node)}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            callee = ast.unparse(node.func)
            # env.str(...), and django-environ's FileAwareEnv().str(...) (NAME or NAME_FILE).
            if callee in ("os.environ.get", "os.getenv", "env") or re.fullmatch(r"(?:env|environ\.FileAwareEnv\(\))\.\w+", callee):
                read(node, node.args[0])
            elif callee in ENV_HELPERS:
                read(node, node.args[0], ENV_HELPERS[callee])
        elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
              and ast.unparse(node.value) == "os.environ"):
            read(node, node.slice)
    return reads, computed


def _shell_reads(path: pathlib.Path) -> dict[str, str]:
    text = path.read_text()
    assigned = set(re.findall(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=", text, re.M))
    reads = {}
    for number, line in enumerate(text.splitlines(), 1):
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", line.split("#", 1)[0] if line.lstrip().startswith("#") else line):
            if name not in assigned:
                reads.setdefault(name, f"{path.relative_to(REPO)}:{number}")
    return reads


def _configuration_read() -> tuple[dict[str, str], list[str]]:
    """Every variable the service, gunicorn, the scripts, the harness and the benchmark read."""
    reads, computed = {}, []
    files = [REPO / "gunicorn.conf.py", REPO / "manage.py", *sorted((REPO / "payment_project").rglob("*.py")),
             *sorted((REPO / "payment_app").rglob("*.py")), *sorted((REPO / "harness").rglob("*.py")),
             *sorted((REPO / "benchmarks").rglob("*.py")), *sorted((REPO / "scripts").iterdir())]
    for path in files:
        if not path.is_file():
            continue
        first = path.read_text().split("\n", 1)[0]
        if path.suffix == ".py" or "python" in first:
            found, dynamic = _python_reads(path)
            computed += dynamic
        elif first.startswith("#!") and "sh" in first:
            found = _shell_reads(path)
        else:
            continue
        for name, at in found.items():
            reads.setdefault(name, at)
    return {n: at for n, at in reads.items() if n not in SYSTEM}, computed


def _documented_text() -> str:
    return "\n".join(page.read_text() for page in PAGES)


def test_every_configuration_variable_the_code_reads_is_documented():
    reads, _ = _configuration_read()
    assert {"DATABASE_URL", "WEB_CONCURRENCY", "MIGRATE_ON_START", "PAYMENT_TEST_POSTGRES_URL"} <= set(reads)
    text = _documented_text()

    def documented(name: str) -> bool:
        # NAME_FILE, the file holding NAME's value, is documented by NAME and the docs' `…_FILE` rule.
        base = name.removesuffix("_FILE")
        return bool(re.search(rf"\b{name}\b", text)
                    or base != name and re.search(rf"\b{base}\b", text) and "`…_FILE`" in text)

    missing = [f"{name} (read at {at})" for name, at in reads.items() if not documented(name)]
    _report(missing, "variables the code reads are not named in README.md or docs/*.md")


def test_every_environment_read_names_its_variable():
    """A read whose name is computed would escape the check above: declare its helper."""
    _, computed = _configuration_read()
    _report(computed, "environment reads compute their variable's name (add to ENV_HELPERS or COMPUTED)")


def _set_outside_the_code() -> str:
    """Manifests, the image, the Makefile and CI: where variables are set for the pods and tools."""
    # .github: the repository variables and secrets the workflows read (vars.X, secrets.X).
    folders = ("base", "overlays", "components", "infrastructure", "tenants", "clusters", "argocd", ".ci", ".github")
    files = [REPO / "Dockerfile", REPO / "Makefile"] + [
        f for folder in folders for f in sorted((REPO / folder).rglob("*")) if f.is_file()]
    return "\n".join(f.read_text(errors="replace") for f in files)


def test_every_environment_variable_the_docs_name_is_read_or_set():
    reads, _ = _configuration_read()
    elsewhere = _set_outside_the_code()
    failures, seen = [], set()
    for page in PAGES:
        for where, code in _code(page):
            match = re.fullmatch(rf"({ENV_NAME.pattern})(?:=.*)?", code.strip())
            if not match:
                continue
            name = match.group(1)
            seen.add(name)
            if (name in reads or name in NOT_OURS or OTEL_SDK.fullmatch(name)
                    or re.search(rf"\b{name}\b", elsewhere)):
                continue
            failures.append(f"{where}: {name}")
    assert len(seen) > 30
    _report(failures, "variables named in the docs are neither read by the code nor set in the manifests")
