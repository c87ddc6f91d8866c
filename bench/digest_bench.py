"""Digest latency: from the last region's check of a run to its digest at every receiver.

The local stack as `servicetags demo` runs it (Azurite, the ARM endpoint, both relays, the SMTP
sink, the webhook receiver), one catch-all recipient plus one Teams, one Slack and one signed
webhook channel, one long-running notifier process. A baseline on cn340, then `--runs` change
runs on the following bundled weeks (cn341, cn342, ...; each changes 18-60 regions; a week
with no change, cn346, sends no digest and is not counted), every region of the cloud, two
worker processes. Per run:

- start: the latest `at` of the run's region outcomes (each worker records it right after the
  region's state is written, in milliseconds);
- end: the time the last of the four deliveries was stored (the SMTP sink and the webhook
  receiver name their files with microsecond UTC timestamps).

The path measured: worker writes its outcome and `complete.json` → runs relay (lists the run
prefixes and the markers not seen yet every 0.2 s) → change-events → notifier (polls an empty
queue 0.05 s after its last message, doubling up to `SERVICETAGS_IDLE_SLEEP`, by default 2 s
as deployed; 0 polls without pause, as the demo) → freeze, read reports, render, send in
parallel. The target is 2 s or less locally.

    .venv/bin/python bench/digest_bench.py [--runs 5] [--idle-sleep 2]
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
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack import stack  # noqa: E402
from devstack.arm_admin import ArmAdminClient  # noqa: E402
from devstack.demo import DEFAULT_OLD, DELIVERY_FILES, Demo, Progress, demo_channels  # noqa: E402

PATTERNS = list(DELIVERY_FILES.values())


def _stamp(path: Path) -> datetime:
    text = path.name.split("-", 1)[0].replace(".", "")  # 20261203T134542219927Z (either style)
    return datetime.strptime(text, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def _files(outbox: Path) -> set[Path]:
    return {p for pattern in PATTERNS for p in outbox.glob(pattern)}


def one_run(demo: Demo, control: ArmAdminClient, outbox: Path, snapshot: Path, label: str) -> dict | None:
    control.set_snapshot(snapshot)
    before = _files(outbox)
    run_id = f"demo-{label}-{int(time.time())}"  # the demo's own ids carry no label
    demo.cycle(label, run_id=run_id)
    runs = demo.clients.container("runs")
    run_prefix = f"Public/{run_id}"
    if not any(
        json.loads(runs.read(n).data)["status"] == "changed"  # type: ignore[union-attr]
        for n in runs.names(f"{run_prefix}/regions/")
    ):
        return None  # a week with the same content under a new number (cn346): no digest
    deadline = time.monotonic() + 60
    while len(_files(outbox) - before) < len(PATTERNS) and time.monotonic() < deadline:
        time.sleep(0.05)
    new = sorted(_files(outbox) - before)
    if len(new) < len(PATTERNS):
        raise SystemExit(f"{label}: only {len(new)} deliveries arrived")
    outcomes = [json.loads(runs.read(n).data) for n in runs.names(f"{run_prefix}/regions/")]  # type: ignore[union-attr]
    last_check = max(datetime.fromisoformat(o["at"]) for o in outcomes)
    complete = json.loads(runs.read(f"{run_prefix}/complete.json").data)  # type: ignore[union-attr]
    frozen = json.loads(
        demo.clients.container("notifications")
        .read(  # type: ignore[union-attr]
            f"runs/{run_prefix}/_digest.json"
        )
        .data
    )
    steps = {
        "complete_marker": datetime.fromisoformat(complete["completed_at"]),
        "notifier_froze_run": datetime.fromisoformat(frozen["frozen_at"]),
    }
    arrivals = {("e-mail" if p.name.endswith(".eml") else p.name.rsplit(".", 2)[-2]): _stamp(p) for p in new}
    changed = sum(o["status"] == "changed" for o in outcomes)
    return {
        "run": label,
        "snapshot": snapshot.name,
        "regions": len(outcomes),
        "changed": changed,
        "latency": {k: round((v - last_check).total_seconds(), 3) for k, v in sorted(arrivals.items())},
        "last": round((max(arrivals.values()) - last_check).total_seconds(), 3),
        "steps": {k: round((v - last_check).total_seconds(), 3) for k, v in steps.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--idle-sleep", default="2", help="the notifier's SERVICETAGS_IDLE_SLEEP (default 2, as deployed)"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    log_path = Path(os.environ.get("DIGEST_BENCH_LOG", os.devnull))
    level = os.environ.get("DIGEST_BENCH_LOG_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="servicetags-digest-bench-") as tmp, log_path.open("ab") as log:
        state, outbox = Path(tmp) / "stack", Path(tmp) / "outbox"
        env = stack.up(state, snapshot=DEFAULT_OLD, persistent=False, outbox=outbox)
        env.update(demo_channels(env, "digest"))
        demo = Demo(env=env, workers=args.workers, regions="all", progress=Progress())
        try:
            demo.cycle("baseline")
            # The notifier with the chosen idle sleep (the demo's own spawn sets 0); its log
            # (DIGEST_BENCH_LOG, DIGEST_BENCH_LOG_LEVEL) shows where the time goes.
            notifier = subprocess.Popen(
                [sys.executable, "-m", "notifier"],
                cwd=ROOT,
                env={
                    **os.environ,
                    **env,
                    "SERVICETAGS_LOG_LEVEL": level,
                    "SERVICETAGS_IDLE_SLEEP": args.idle_sleep,
                },
                stdout=log,
                stderr=log,
            )
            demo.children.append(notifier)
            time.sleep(2)
            control = ArmAdminClient.from_state_dir(state / "arm")
            weeks = sorted(
                DEFAULT_OLD.parent.glob("ServiceTags_Public_*.json.gz"),
                key=lambda p: int(p.name.split("_cn")[1].split(".")[0]),
            )[1:]
            results: list[dict] = []
            for i, week in enumerate(weeks):
                if len(results) == args.runs:
                    break
                result = one_run(demo, control, outbox, week, f"run{i}")
                if result is not None:
                    results.append(result)
        finally:
            demo.stop_children()
            stack.down(state)
    lasts = [r["last"] for r in results]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(
        json.dumps(
            {
                "machine": machine,
                "idle_sleep": args.idle_sleep,
                "runs": results,
                "median_last_delivery_s": statistics.median(lasts),
                "min_s": min(lasts),
                "max_s": max(lasts),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
