"""Times `servicetags diff` on a full real pair, all regions, against the minimal reference,
both as whole processes, interleaved in the same run. Prints medians as a Markdown table.

    .venv/bin/python bench/diff_bench.py [--runs 31] [OLD NEW]

A third row runs the same comparison without the forked child (one core), to show the work
done; the ratio that counts is the console command's median over the reference's median.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "snapshots"
ONE_CORE = """
import gc, os, sys
gc.disable()
from core.render import to_json
from servicetags.diff_command import compare_files
sys.stdout.write(to_json(compare_files(sys.argv[1], sys.argv[2], parallel=False)[2]))
sys.stdout.flush()
os._exit(0)
"""


def run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        default=[
            DATA / "ServiceTags_Public_2025-06-22_cn360.json.gz",
            DATA / "ServiceTags_Public_2025-07-12_cn361.json.gz",
        ],
    )
    args = parser.parse_args()
    old, new = map(str, args.files)
    commands = {
        "reference (json + set difference)": [
            sys.executable,
            str(ROOT / "bench" / "reference_diff.py"),
            old,
            new,
        ],
        # The installed console command, as users run it.
        "servicetags diff --region all": [
            str(Path(sys.executable).with_name("servicetags")),
            "diff",
            old,
            new,
        ],
        "the same on one core (no fork)": [sys.executable, "-c", ONE_CORE, old, new],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    # An installed package comes with its .pyc files (pip compiles them); a source checkout
    # gets them on the first run, unless PYTHONDONTWRITEBYTECODE is set, as on these machines.
    for package in ("core", "runtime", "servicetags"):
        compileall.compile_dir(ROOT / package, quiet=1)
    for argv in commands.values():  # warm the page cache and .pyc files
        run(argv)
    for _ in range(args.runs):
        for name, argv in commands.items():
            results[name].append(run(argv))
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.runs} interleaved runs; files {Path(old).name}, "
        f"{Path(new).name}\n"
    )
    print("| command | median wall (s) | min wall (s) | median peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    medians = {}
    for name, samples in results.items():
        walls = [w for w, _ in samples]
        medians[name] = statistics.median(walls)
        print(
            f"| {name} | {medians[name]:.3f} | {min(walls):.3f} | "
            f"{statistics.median(r for _, r in samples):.0f} |"
        )
    ref, ours, _ = medians.values()
    ref_walls, our_walls, _ = ([w for w, _ in samples] for samples in results.values())
    paired = statistics.median(o / r for r, o in zip(ref_walls, our_walls, strict=True))
    print(
        f"\nRatio servicetags diff / reference (median wall): {ours / ref:.2f} "
        f"(median of the {args.runs} paired ratios: {paired:.2f})"
    )


if __name__ == "__main__":
    main()
