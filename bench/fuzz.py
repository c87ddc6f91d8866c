"""The fuzz tier with a long budget: every property of tests/unit/test_fuzz.py, with
`--examples` cases each (the suite runs 100) and fresh random inputs (the suite's are fixed).
Anything it finds is printed by pytest as the smallest failing input; keep the seed it prints.

    .venv/bin/python bench/fuzz.py [--examples 5000] [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=5000, help="cases per property (default 5000)")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (e.g. -k webhook)")
    args = parser.parse_args()
    env = {**os.environ, "SERVICETAGS_FUZZ_EXAMPLES": str(args.examples)}
    started = time.monotonic()
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/unit/test_fuzz.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "0",
            *args.pytest_args,
        ],
        cwd=ROOT,
        env=env,
    )
    print(
        f"fuzz: {args.examples} examples per property, {time.monotonic() - started:.0f} s, "
        f"{'nothing found' if code == 0 else 'FOUND SOMETHING (see above)'}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
