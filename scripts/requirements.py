#!/usr/bin/env python3
"""Print the pinned requirements from pyproject.toml, one per line.

Usage: requirements.py [GROUP ...]
Without a group: the runtime dependencies. Each GROUP adds that optional group.
pyproject.toml stays the only place where versions are pinned.
"""

import pathlib
import sys
import tomllib

PYPROJECT = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"


def main(groups: list[str]) -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for group in groups:
        if group not in optional:
            print(f"unknown group {group!r}; known: {', '.join(optional)}", file=sys.stderr)
            return 2
        lines += optional[group]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
