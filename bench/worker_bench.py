"""Worker benchmarks on real snapshots, against Azurite and the local ARM endpoint.

1. CPU per message for an unchanged region on a full real payload, network excluded: an
   in-process worker whose source hands back a reply fetched once, timed with process_time
   around each message (parse, select, hash, state read and write).
2. Full cycles of every region with 1, 2 and 4 worker processes: a baseline cycle (cn340)
   and a change cycle (cn341); wall time, messages per second, peak RSS per worker.

    .venv/bin/python bench/worker_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.arm_endpoint import ArmEndpoint  # noqa: E402
from devstack.azurite import start_azurite  # noqa: E402
from runtime.config import Env  # noqa: E402
from tests.integration.pipeline import Pipeline  # noqa: E402

DATA = ROOT / "data" / "snapshots"
OLD = DATA / "ServiceTags_Public_2025-01-12_cn340.json.gz"
NEW = DATA / "ServiceTags_Public_2025-01-14_cn341.json.gz"


def _regions() -> list[str]:
    from core.change_report import index_of
    from runtime.snapshot_files import load_snapshot

    return index_of(load_snapshot(OLD)).names


REGIONS = _regions()


class MemorySource:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def fetch(self, cloud: str, location: str):
        from core.ports import Fetched

        return Fetched(self.body, "memory")


def cpu_per_message(pipeline: Pipeline, arm: ArmEndpoint) -> dict[str, float]:
    from runtime.identity import DevTokenCredential
    from worker.main import WorkerSettings, build_consumer
    from worker.sources import ArmSource, arm_clients

    arm.set_snapshot(OLD)
    pipeline.produce()
    pipeline.work()  # baseline: every region has a state
    source = ArmSource(
        arm_clients(
            subscription_id=pipeline.env["AZURE_SUBSCRIPTION_ID"],
            credential_for=lambda _: DevTokenCredential(),
            endpoint=arm.url,
            ca_bundle=str(arm.ca_path),
        ),
        pipeline.env["AZURE_SUBSCRIPTION_ID"],
    )
    body = source.fetch("Public", "westeurope").body
    pipeline.produce()  # every region again: all unchanged
    consumer = build_consumer(WorkerSettings.from_env(Env(pipeline.env)), threading.Event())
    import worker.main as wm  # the handler closes over its source: swap it for the in-memory one

    del wm
    handler = consumer.handler
    cell = next(c for c in handler.__closure__ if type(c.cell_contents).__name__ == "ArmSource")
    cell.cell_contents = MemorySource(body)
    samples = []
    while (message := consumer.queue.receive(60)) is not None:
        start = time.process_time()
        consumer.process(message)
        samples.append(time.process_time() - start)
    p90 = sorted(samples)[int(len(samples) * 0.9)]
    return {
        "messages": len(samples),
        "first_ms": samples[0] * 1000,
        "median_ms": statistics.median(samples) * 1000,
        "p90_ms": p90 * 1000,
    }


def cycle(pipeline: Pipeline, workers: int) -> tuple[float, int, float]:
    """Drain the regions queue with N worker processes: wall seconds, messages, max peak RSS MB."""
    count = pipeline.queue.depth()
    start = time.perf_counter()
    procs = [pipeline.spawn_worker(SERVICETAGS_LOG_LEVEL="WARNING") for _ in range(workers)]
    rss = []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        p.communicate()
        rss.append(usage.ru_maxrss / 1024)
        assert p.returncode == 0
    return time.perf_counter() - start, count, max(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    azurite = start_azurite()
    arm = ArmEndpoint(OLD)
    arm.start()
    try:
        cpu_runs = []
        for _ in range(args.repeats):
            p = Pipeline(
                azurite.connection_string, arm.url, str(arm.ca_path), SERVICETAGS_LOG_LEVEL="WARNING"
            )
            cpu_runs.append(cpu_per_message(p, arm))
            p.cleanup()
        print("## Worker CPU per message (unchanged region, full real payload, network excluded)\n")
        print("| run | messages | first message (ms) | median (ms) | p90 (ms) |")
        print("|---|---:|---:|---:|---:|")
        for i, r in enumerate(cpu_runs, 1):
            print(
                f"| {i} | {r['messages']} | {r['first_ms']:.1f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} |"
            )
        print(f"\nMedian of run medians: {statistics.median(r['median_ms'] for r in cpu_runs):.1f} ms\n")

        print("## Full cycles, every region of the real snapshot (cn340 baseline, then cn341)\n")
        print("| workers | cycle | messages | median wall (s) | messages/s | max worker peak RSS (MB) |")
        print("|---:|---|---:|---:|---:|---:|")
        for workers in (1, 2, 4):
            results: dict[str, list[tuple[float, int, float]]] = {"baseline": [], "change": []}
            for _ in range(args.repeats):
                p = Pipeline(azurite.connection_string, arm.url, str(arm.ca_path), SERVICETAGS_IDLE_SLEEP="1")
                arm.set_snapshot(OLD)
                p.produce(",".join(REGIONS))  # every region: a baseline cycle with no state yet
                results["baseline"].append(cycle(p, workers))
                arm.set_snapshot(NEW)
                p.produce(",".join(REGIONS))
                results["change"].append(cycle(p, workers))
                p.cleanup()
            for kind, runs in results.items():
                wall = statistics.median(r[0] for r in runs)
                msgs = runs[0][1]
                peak = max(r[2] for r in runs)
                print(f"| {workers} | {kind} | {msgs} | {wall:.2f} | {msgs / wall:.1f} | {peak:.0f} |")
    finally:
        arm.stop()
        azurite.stop()


if __name__ == "__main__":
    main()
