"""The hash-checked locks in requirements/ agree with what they are resolved from
(pyproject.toml, requirements/*.in), without a network: every pinned requirement is in
its lock at that version, every package the lock says comes from the input is still
asked for there, and every locked package carries hashes."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.kube import REPO

REQUIREMENTS = REPO / "requirements"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# `uv pip compile` names where a top-level requirement came from like this.
PYPROJECT_SOURCE = "antaeus-payment (pyproject.toml)"


def in_file(name: str) -> list[str]:
    lines = (REQUIREMENTS / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


# lock file -> (its input requirements, how the lock annotates that input)
LOCKS = {
    "run.txt": (PROJECT["dependencies"], PYPROJECT_SOURCE),
    "test.txt": (PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"], PYPROJECT_SOURCE),
    "checkov.txt": (in_file("checkov.in"), "-r requirements/checkov.in"),
    "uv.txt": (in_file("uv.in"), "-r requirements/uv.in"),
}
ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)")


def parse_lock(text: str) -> list[dict]:
    """Each locked entry: name, version, hashes and the sources its `# via` names."""
    entries: list[dict] = []
    for line in text.splitlines():
        stripped = line.strip()
        if match := ENTRY.match(line):
            entries.append({"name": canonicalize_name(match["name"]), "version": match["version"],
                            "hashes": [], "via": []})
        elif stripped.startswith("--hash=sha256:") and entries:
            entries[-1]["hashes"].append(stripped)
        elif stripped.startswith("# via") and entries:
            rest = stripped.removeprefix("# via").strip()
            if rest:
                entries[-1]["via"].append(rest)
        elif stripped.startswith("#   ") and entries:
            entries[-1]["via"].append(stripped.removeprefix("#").strip())
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"unexpected line in a lock: {line!r}")
    return entries


def disagreements(requirements: list[str], source: str, lock_text: str) -> list[str]:
    entries = parse_lock(lock_text)
    problems = [f"{e['name']}=={e['version']} has no hash" for e in entries if not e["hashes"]]
    locked: dict[str, set[str]] = {}
    for entry in entries:
        locked.setdefault(entry["name"], set()).add(entry["version"])
    wanted = {canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements}
    for name, requirement in wanted.items():
        if name not in locked:
            problems.append(f"{requirement} is not in the lock")
        elif not all(requirement.specifier.contains(v, prereleases=True) for v in locked[name]):
            problems.append(f"{requirement} but the lock has {sorted(locked[name])}")
    from_input = {e["name"] for e in entries if source in e["via"]}
    problems += [f"the lock still has {name} from its input, which no longer asks for it"
                 for name in sorted(from_input - set(wanted))]
    return problems


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_agrees_with_its_input(lock):
    requirements, source = LOCKS[lock]
    assert all("==" in r for r in requirements), "inputs pin exact versions"
    assert disagreements(requirements, source, (REQUIREMENTS / lock).read_text()) == [], \
        "re-run `make lock` (README, 'Dependencies and why')"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_was_written_by_make_lock(lock):
    """The header holds the command (Renovate re-runs it): hashes and one Python for all."""
    header = (REQUIREMENTS / lock).read_text().splitlines()[1].lstrip("# ")
    assert header.strip().startswith("uv pip compile --generate-hashes --universal --python-version 3.11"), header


def test_runtime_lock_is_the_tested_versions():
    tested = {(e["name"], e["version"]) for e in parse_lock((REQUIREMENTS / "test.txt").read_text())}
    served = {(e["name"], e["version"]) for e in parse_lock((REQUIREMENTS / "run.txt").read_text())}
    assert served <= tested, sorted(served - tested)


def test_the_check_notices_a_bumped_pin_and_a_dropped_dependency():
    text = (REQUIREMENTS / "run.txt").read_text()
    deps = PROJECT["dependencies"]
    django = next(d for d in deps if d.lower().startswith("django=="))
    bumped = [d if d != django else "Django==9.9.9" for d in deps]
    assert any("Django==9.9.9" in p for p in disagreements(bumped, PYPROJECT_SOURCE, text))
    dropped = [d for d in deps if d != django]
    assert any("still has django from its input" in p for p in disagreements(dropped, PYPROJECT_SOURCE, text))
    unhashed = re.sub(r"\\\n\s+--hash=sha256:\w+", "", text)
    assert any("has no hash" in p for p in disagreements(deps, PYPROJECT_SOURCE, unhashed))


def test_every_install_is_from_a_lock_with_hash_checking():
    """The image, make run, make test and checkov's virtualenv: pip refuses any file whose
    hash the lock does not list, and any package it does not name."""
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    installs = [line for text in (dockerfile, makefile) for line in text.splitlines() if "pip install" in line]
    assert len(installs) == 5, installs
    for line in installs:
        assert re.search(r"--require-hashes -r requirements/(run|test|checkov|uv)\.txt$", line.strip()), line
    assert "requirements/run.txt" in dockerfile and "requirements/test.txt" not in dockerfile


def test_the_dockerfile_pulls_no_frontend_image():
    """A `# syntax=` parser directive makes BuildKit fetch that frontend from Docker Hub
    before anything else: a builder that reaches only a registry mirror then fails."""
    first = (REPO / "Dockerfile").read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first
