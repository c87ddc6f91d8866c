"""Times `servicetags impact` on the largest report of the bundled history (cn350 → cn353, all
regions: 263 tags, 2,809 changed blocks) against 10,000 rules, as whole processes, beside a
plain all-pairs `ipaddress` overlap check (bench/reference_impact.py), in the same run.
Prints medians as a Markdown table.

    .venv/bin/python bench/impact_bench.py [--runs 11] [--reference-runs 3]

The 10,000 rules are made from the real snapshots, deterministically: NSG rules naming real
tags (regional and global, in varied case) or real prefixes, and IP Groups holding real
prefixes (some from the changed tags, most not) and private ranges.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "snapshots"
OLD = DATA / "ServiceTags_Public_2025-04-02_cn350.json.gz"
NEW = DATA / "ServiceTags_Public_2025-05-01_cn353.json.gz"
RULES = 10_000
SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"


def make_rules(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from runtime.snapshot_files import load_snapshot

    snapshot = load_snapshot(NEW)
    rng = random.Random(14)
    tags = sorted(snapshot.tags)
    prefixes = sorted({p for t in snapshot.tags.values() for p in t.prefixes if ":" not in p})
    nsgs, groups = [], []
    # Half NSG rules (10 per NSG), half IP Groups with 2 addresses each (one "rule" each).
    for n in range(RULES // 2 // 10):
        group = f"/subscriptions/{SUB}/resourceGroups/rg-{n % 20}/providers"
        nid = f"{group}/Microsoft.Network/networkSecurityGroups/nsg-{n}"
        rules = []
        for i in range(10):
            pick = rng.random()
            if pick < 0.5:
                value = rng.choice(tags)
                value = value.lower() if rng.random() < 0.3 else value
            elif pick < 0.8:
                value = rng.choice(prefixes)
            else:
                value = f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
            rules.append(
                {
                    "name": f"r{i}",
                    "properties": {
                        "sourceAddressPrefix": "*",
                        "destinationAddressPrefix": value,
                        "access": "Allow",
                        "direction": "Outbound",
                        "priority": 100 + i,
                        "protocol": "Tcp",
                    },
                }
            )
        nsgs.append(
            {
                "id": nid,
                "name": f"nsg-{n}",
                "type": "Microsoft.Network/networkSecurityGroups",
                "properties": {"securityRules": rules},
            }
        )
    for n in range(RULES // 2):
        gid = f"/subscriptions/{SUB}/resourceGroups/rg-{n % 20}/providers/Microsoft.Network/ipGroups/ipg-{n}"
        groups.append(
            {
                "id": gid,
                "name": f"ipg-{n}",
                "type": "Microsoft.Network/ipGroups",
                "properties": {"ipAddresses": [rng.choice(prefixes), f"192.168.{rng.randrange(256)}.0/24"]},
            }
        )
    (folder / "nsgs.json").write_text(json.dumps(nsgs))
    (folder / "ip-groups.json").write_text(json.dumps(groups))


def run(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{argv} failed")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--reference-runs", type=int, default=3)
    args = parser.parse_args()
    servicetags = str(Path(sys.executable).with_name("servicetags"))
    with tempfile.TemporaryDirectory(prefix="impact-bench-") as tmp:
        folder = Path(tmp)
        rules = folder / "rules"
        rules.mkdir()
        make_rules(rules)
        report = folder / "report.json"
        with report.open("wb") as out:
            subprocess.run([servicetags, "diff", str(OLD), str(NEW)], stdout=out, check=True)
        commands = {
            "plain all-pairs ipaddress check (reference)": [
                sys.executable,
                str(ROOT / "bench" / "reference_impact.py"),
                str(report),
                str(rules),
            ],
            "servicetags impact --format json": [
                servicetags,
                "impact",
                str(report),
                "--rules",
                str(rules),
                "--format",
                "json",
            ],
            "servicetags impact --snapshot NEW (copies too)": [
                servicetags,
                "impact",
                str(report),
                "--rules",
                str(rules),
                "--snapshot",
                str(NEW),
                "--format",
                "json",
            ],
        }
        for package in ("core", "runtime", "servicetags", "impact"):
            compileall.compile_dir(ROOT / package, quiet=1)
        for name, argv in commands.items():  # warm the page cache and .pyc files
            if "reference" not in name:
                run(argv)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for i in range(args.runs):
            for name, argv in commands.items():
                if "reference" in name and i >= args.reference_runs:
                    continue
                results[name].append(run(argv))
        affected = json.loads(
            subprocess.run(
                commands["servicetags impact --format json"], capture_output=True, check=False
            ).stdout
        )["summary"]
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {OLD.name} → {NEW.name}, {RULES:,} rules "
        f"({affected['rules_affected']:,} touched); {args.runs} runs "
        f"({args.reference_runs} of the reference), "
        "interleaved\n"
    )
    print("| command | runs | median wall (s) | min wall (s) | median CPU (s) | median peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples in results.items():
        walls = [w for w, _, _ in samples]
        print(
            f"| {name} | {len(walls)} | {statistics.median(walls):.3f} | {min(walls):.3f} | "
            f"{statistics.median(c for _, c, _ in samples):.3f} | "
            f"{statistics.median(r for _, _, r in samples):.0f} |"
        )


if __name__ == "__main__":
    main()
