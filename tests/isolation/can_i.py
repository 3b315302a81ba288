"""The RBAC expectations table (rbac-table.yaml), expanded per environment, and the same
table as `kubectl auth can-i` commands for a real cluster.

    python -m tests.isolation.can_i staging > can-i-staging.sh
    bash can-i-staging.sh        # with a kubeconfig allowed to impersonate (cluster admin)

Each line runs one `kubectl auth can-i ... --as ... [--as-group ...]` and prints `ok` or
`FAIL` against the expected answer; the script exits non-zero if any line failed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import sys

import yaml

from tests.isolation.rbac import Request, Subject

TABLE = pathlib.Path(__file__).resolve().parent / "rbac-table.yaml"
SERVICES = ("antaeus", "payment")
ENVIRONMENTS = ("staging", "production")


@dataclasses.dataclass(frozen=True)
class Row:
    subject: str
    verb: str
    resource: str
    namespace: str  # "-" = cluster scope / all namespaces
    expected: bool

    @property
    def id(self) -> str:
        where = "cluster" if self.namespace == "-" else f"ns={self.namespace}"
        return f"{self.subject} {self.verb} {self.resource} {where} -> {'yes' if self.expected else 'no'}"

    def who(self) -> Subject:
        return Subject.parse(self.subject)

    def request(self) -> Request:
        return Request.parse(self.verb, self.resource, None if self.namespace == "-" else self.namespace)

    def kubectl(self) -> list[str]:
        resource, _, subresource = self.resource.partition("/")
        args = ["kubectl", "auth", "can-i", self.verb, resource]
        if subresource:
            args.append(f"--subresource={subresource}")
        args.append("--all-namespaces" if self.namespace == "-" else f"--namespace={self.namespace}")
        kind, _, rest = self.subject.partition(":")
        if kind == "group":
            # --as-group needs a user; the name is arbitrary, only the group grants rights.
            args += ["--as=isolation-check", f"--as-group={rest}"]
        elif kind == "sa":
            args.append(f"--as=system:serviceaccount:{rest}")
        else:
            args.append(f"--as={rest}")
        return args


def _parse(raw: list, substitutions: dict[str, str]) -> Row:
    subject, verb, resource, namespace, expected = raw
    def fill(text: str) -> str:
        for key, value in substitutions.items():
            text = text.replace(f"<{key}>", value)
        assert "<" not in text, f"unknown placeholder in {raw}"
        return text

    if not isinstance(expected, bool):
        raise ValueError(f"expected must be true/false: {raw}")
    return Row(fill(subject), verb, resource, fill(namespace), expected)


def rows(env: str) -> list[Row]:
    table = yaml.safe_load(TABLE.read_text())
    result = []
    for svc in SERVICES:
        (other,) = [s for s in SERVICES if s != svc]
        for section in ("both", env):
            result += [_parse(raw, {"svc": svc, "other": other}) for raw in table["per_service"][section] or []]
    for section in ("both", env):
        result += [_parse(raw, {}) for raw in table["rows"][section] or []]
    return result


def script(env: str) -> str:
    lines = [
        "#!/usr/bin/env bash",
        f"# RBAC expectations for {env}, generated from tests/isolation/rbac-table.yaml.",
        "failed=0",
        'check() { want=$1; shift; got=$("$@" 2>/dev/null); '
        'if [ "$got" = "$want" ]; then echo "ok   $want  ${*:4}"; '
        'else echo "FAIL want $want got ${got:-error}  ${*:4}"; failed=1; fi; }',
    ]
    for row in rows(env):
        lines.append(f"check {'yes' if row.expected else 'no'} {shlex.join(row.kubectl())}")
    lines.append('exit "$failed"')
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ENVIRONMENTS:
        print(f"usage: python -m tests.isolation.can_i {{{','.join(ENVIRONMENTS)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(script(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
