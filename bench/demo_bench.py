"""Wall time of `servicetags demo` (all regions of the bundled real pair) with 1, 2 and 4
workers; median of several runs. Prints a Markdown table.

    .venv/bin/python bench/demo_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.runs} runs each; `servicetags demo --workers N` (bundled cn340 → cn341, all regions)\n"
    )
    print(
        "| workers | median total (s) | median baseline cycle (s) | median change cycle (s) "
        "| median e-mail (s) | regions | reports | e-mails |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workers in (1, 2, 4):
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                summary = Path(tmp) / "summary.json"
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "servicetags",
                        "demo",
                        "--workers",
                        str(workers),
                        "--outbox",
                        str(Path(tmp) / "outbox"),
                        "--summary-json",
                        str(summary),
                    ],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
                runs.append(json.loads(summary.read_text()))
        med = {k: statistics.median(r["timings"][k] for r in runs) for k in ("baseline", "change", "notify")}
        last = runs[-1]
        print(
            f"| {workers} | {statistics.median(r['seconds'] for r in runs):.1f} | {med['baseline']:.1f} "
            f"| {med['change']:.1f} | {med['notify']:.1f} | {last['regions_checked']} "
            f"| {len(last['reports'])} | {len(last['emails'])} |"
        )


if __name__ == "__main__":
    main()
