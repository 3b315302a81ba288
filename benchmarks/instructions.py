"""Instructions per charge: benchmarks.cpu's charge path counted by valgrind's callgrind.

    python -m benchmarks.instructions [--tree PATH] [--charges 500]

A count of executed instructions, not a time: the same tree gives the same figure on a
busy or a quiet machine (within about 0.5%), so two commits can be compared where the
rates of `make bench` swing by 30%. It runs benchmarks/cpu.py twice under callgrind, with
100 and with 100 + --charges charges, and divides the difference by --charges, so the
start-up, the migrations and the warm-up cancel out. --tree measures another checkout's
payment_project with this checkout's cpu.py (an older commit need not have it). Takes
about a minute; needs valgrind (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

CPU_SCRIPT = pathlib.Path(__file__).with_name("cpu.py")
BASE_CHARGES = 100


def instructions(tree: pathlib.Path, charges: int) -> int:
    with tempfile.TemporaryDirectory(prefix="payment-callgrind-") as out:
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out",
             sys.executable, str(CPU_SCRIPT), "--charges", str(charges), "--rounds", "1", "--no-sync"],
            cwd=tree,
            # The hash seed changes the interpreter's work from run to run; fixed, the count repeats.
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)},
            capture_output=True, text=True,
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({run.returncode}):\n{run.stdout}\n{run.stderr[-2000:]}")
    return int(found.group(1))


def require_valgrind() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=pathlib.Path, default=pathlib.Path.cwd(),
                        help="checkout whose payment_project is measured (default: the current directory)")
    parser.add_argument("--charges", type=int, default=500)
    args = parser.parse_args(argv)
    require_valgrind()
    tree = args.tree.resolve()
    base = instructions(tree, BASE_CHARGES)
    more = instructions(tree, BASE_CHARGES + args.charges)
    print(f"{tree.name}: {(more - base) / args.charges:,.0f} instructions per charge "
          f"(callgrind, {args.charges} charges, SQLite synchronous=OFF)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
