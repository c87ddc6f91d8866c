"""Lookups and history against the history index, side by side with their references.

    python bench/lookup_bench.py [--runs 7] [--queries 20000]

1. Warm lookups per second on the latest snapshot (an index of cn369 alone, ~110k prefixes),
   next to a linear scan over every prefix with `ipaddress` (the common approach), on the same
   addresses (a smaller sample for the scan: it is four orders of magnitude slower).
2. Cold processes, interleaved run by run: `servicetags lookup ADDRESS --index FILE` and
   `servicetags history ADDRESS --index FILE` on the index of all 24 files, next to a process
   that only json-loads the newest snapshot file (what a linear-scan tool pays before its
   first answer). Targets: lookup <= 0.5x, history <= 1x that reference.
3. Growth: index size, load time and warm lookup rate for histories of 1, 6, 12 and 24 files.

The indexes are built in-process from the bundled files (whole-cloud reports, `region=all`):
the same structure `servicetags import` stores, without a storage emulator in the timing.
Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import compileall
import gc
import ipaddress
import itertools
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.change_report import change_report  # noqa: E402
from core.history_index import Builder, Index  # noqa: E402
from core.prefixes import PrefixParser  # noqa: E402
from runtime.snapshot_files import load_snapshot  # noqa: E402

DATA = ROOT / "data" / "snapshots"
FILES = sorted(DATA.glob("ServiceTags_Public_*_cn*.json.gz"))
SERVICETAGS = Path(sys.executable).with_name("servicetags")


def build(files: list[Path]) -> bytes:
    parser = PrefixParser()
    snaps = [load_snapshot(f, parser) for f in files]
    b = Builder("Public")
    first = snaps[0]
    b.baseline(
        region="all",
        change_number=first.change_number,
        sha256="-",
        tags=((t.id, t.system_service, t.prefixes) for t in first.tags.values()),
    )
    for old, new in itertools.pairwise(snaps):
        b.apply_report(
            f"Public/all/{old.change_number}-{new.change_number}.json",
            change_report(old, new, region="all", parser=parser),
        )
    for f, s in zip(files, snaps, strict=True):
        b.set_date(s.change_number, f.name.split("_")[2])
    return b.to_bytes()


def queries(files: list[Path], n: int, seed: int = 7) -> list[str]:
    """Addresses inside real prefixes of the newest file (3 in 4) and random IPv4 ones."""
    snap = load_snapshot(files[-1], PrefixParser())
    prefixes = sorted({p for t in snap.tags.values() for p in t.prefixes})
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.75:
            net = ipaddress.ip_network(rng.choice(prefixes))
            out.append(str(net[rng.randrange(min(net.num_addresses, 1 << 16))]))
        else:
            out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
    return out


def warm_rate(index: Index, qs: list[str]) -> float:
    """Lookups per CPU second of this process (steadier than wall time on a shared machine)."""
    start = time.process_time()
    for q in qs:
        index.lookup(q)
    return len(qs) / (time.process_time() - start)


def linear_rate(files: list[Path], qs: list[str]) -> float:
    snap = load_snapshot(files[-1], PrefixParser())
    table = [(t.id, ipaddress.ip_network(p)) for t in snap.tags.values() for p in t.prefixes]
    start = time.process_time()
    for q in qs:
        address = ipaddress.ip_address(q)
        [tag for tag, net in table if address.version == net.version and address in net]
    return len(qs) / (time.process_time() - start)


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child): on a shared machine the CPU time is the
    steadier measure of what the process itself costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--queries", type=int, default=20000)
    args = ap.parse_args()
    gc.freeze()
    # An installed package comes with its .pyc files; a checkout gets them here (even with
    # PYTHONDONTWRITEBYTECODE set), so the cold processes are timed as installed.
    for package in ("core", "runtime", "servicetags", "web", "worker"):
        compileall.compile_dir(ROOT / package, quiet=1)
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; `python bench/lookup_bench.py --runs {args.runs}`\n"
    )

    latest = Index.from_bytes(build(FILES[-1:]))
    prefixes = len(latest.ep_tag)
    qs = queries(FILES, args.queries)
    rates = [warm_rate(latest, qs) for _ in range(args.runs)]
    linear = [linear_rate(FILES, qs[:20]) for _ in range(3)]
    print("| warm lookups, latest snapshot | per second (median) |")
    print("|---|---|")
    print(
        f"| history index ({prefixes:,} tag-prefix stays, {len(qs):,} addresses) | "
        f"{statistics.median(rates):,.0f} |"
    )
    print(
        f"| linear scan with ipaddress over every prefix (20 addresses) | "
        f"{statistics.median(linear):,.1f} |\n"
    )

    with tempfile.TemporaryDirectory() as tmp:
        full = build(FILES)
        index_file = Path(tmp) / "Public.bin"
        index_file.write_bytes(full)
        address = "4.150.76.83"
        reference = [sys.executable, "-c", f"import gzip, json; json.load(gzip.open({str(FILES[-1])!r}))"]
        lookup = [str(SERVICETAGS), "lookup", address, "--index", str(index_file)]
        history = [str(SERVICETAGS), "history", address, "--index", str(index_file)]
        times: dict[str, list[tuple[float, float]]] = {"reference": [], "lookup": [], "history": []}
        for argv in (reference, lookup, history):  # warm the page cache and .pyc files
            timed(argv)
        for _ in range(args.runs):
            for name, argv in (("reference", reference), ("lookup", lookup), ("history", history)):
                times[name].append(timed(argv))

        def med(name: str, i: int) -> float:
            return statistics.median(t[i] for t in times[name])

        print(
            f"| cold process ({len(FILES)}-file index, {len(full) / 1e6:.1f} MB), medians | wall s "
            "| x reference | CPU s | x reference | target |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| `python -c 'json.load(gzip.open(newest))'` (reference) | {med('reference', 0):.3f} | 1.00 "
            f"| {med('reference', 1):.3f} | 1.00 | |"
        )
        for name, target in (("lookup", "≤ 0.5"), ("history", "≤ 1")):
            print(
                f"| `servicetags {name} {address} --index FILE` | {med(name, 0):.3f} | "
                f"{med(name, 0) / med('reference', 0):.2f} | {med(name, 1):.3f} | "
                f"{med(name, 1) / med('reference', 1):.2f} | {target} |"
            )
        print()

    print("| history length | index MB | load ms | warm lookups/s | history of one address, ms |")
    print("|---|---|---|---|---|")
    for n in (1, 6, 12, 24):
        data = build(FILES[:n])
        loads = []
        for _ in range(args.runs):
            start = time.perf_counter()
            index = Index.from_bytes(data)
            loads.append(time.perf_counter() - start)
        rate = statistics.median(warm_rate(index, qs[:5000]) for _ in range(3))
        start = time.perf_counter()
        for q in qs[:200]:
            index.history(q)
        per_history = (time.perf_counter() - start) / 200
        print(
            f"| {n} files | {len(data) / 1e6:.2f} | {statistics.median(loads) * 1000:.1f} | {rate:,.0f} | "
            f"{per_history * 1000:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
