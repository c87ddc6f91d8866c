"""Notifier benchmarks: report blob to e-mail file, with real processes on Azurite.

Every run starts, from a clean in-memory Azurite, the SMTP sink (`python -m devstack.smtp_sink`),
the blob-event relay (`python -m devstack.relay`) and one or more long-running notifiers
(`python -m notifier`), each in its own process, on fresh containers and queues. The reports are
real: `core.change_report.compare` on the real snapshots (cn340→341, 344→345, 346→347, 360→361),
every region with changes; one recipient matches everything, so one e-mail per report.

1. Latency: one report at a time, from just before the blob is written until its `.eml` file
   (matched by the X-Servicetags-Report header) is in the sink's outbox, polled every 10 ms.
   Each write waits a random time first (up to one relay interval plus one notifier idle
   sleep), so reports land at random points of both polling cycles, as real ones do.
   Two settings: fast (relay --interval 0.2, SERVICETAGS_IDLE_SLEEP=0) and the defaults
   (relay --interval 0.5, SERVICETAGS_IDLE_SLEEP=2; the idle sleep is whole seconds).
2. Throughput: a burst of reports written at once (8 writer threads), timed from the first write
   until every expected `.eml` file exists, with 1 and 2 notifier processes (fast settings).

    .venv/bin/python bench/notifier_bench.py [--reports 30] [--burst 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.layout import report_name, to_json_bytes  # noqa: E402
from devstack.azurite import start_azurite  # noqa: E402
from runtime.adapters.storage import StorageClients, StorageSettings  # noqa: E402
from runtime.config import Env  # noqa: E402

DATA = ROOT / "data" / "snapshots"
PAIRS = ((340, 341), (344, 345), (346, 347), (360, 361))
POLL = 0.01  # seconds between looks at the outbox
TIMEOUT = 60.0  # seconds to wait for any one e-mail before giving up


class Setting(NamedTuple):
    label: str
    relay_interval: float
    idle_sleep: int


FAST = Setting("fast: relay 0.2 s, idle sleep 0 s", 0.2, 0)
DEFAULT = Setting("defaults: relay 0.5 s, idle sleep 2 s", 0.5, 2)


def _snapshot(cn: int) -> Path:
    [path] = sorted(DATA.glob(f"ServiceTags_Public_*_cn{cn}.json.gz"))
    return path


def real_reports() -> list[tuple[str, bytes]]:
    """(blob name, bytes) of every report with changes, over all pairs and regions."""
    from core.change_report import change_report, index_of
    from core.prefixes import PrefixParser
    from runtime.snapshot_files import load_snapshot

    parser = PrefixParser()
    out: dict[str, bytes] = {}
    for old_cn, new_cn in PAIRS:
        old, new = load_snapshot(_snapshot(old_cn), parser), load_snapshot(_snapshot(new_cn), parser)
        index = index_of(old, new)
        for region in [*index.names, "global"]:
            report = change_report(old, new, region=region, parser=parser, index=index)
            if report["tags"]:
                out.setdefault(report_name(report), to_json_bytes(report))
    return list(out.items())


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _report_header(path: Path) -> str:
    with path.open("rb") as f:
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parse(f)
    return str(headers["X-Servicetags-Report"] or "").strip()


class Stack:
    """Sink, relay and notifiers as processes, on their own containers and queues in one Azurite."""

    def __init__(self, connection_string: str, setting: Setting, notifiers: int) -> None:
        self.setting = setting
        self.dir = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
        self.outbox = self.dir / "outbox"
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self.seen: set[str] = set()
        suffix = uuid.uuid4().hex[:10]
        self.env = {
            "SERVICETAGS_STORAGE_CONNECTION_STRING": connection_string,
            "SERVICETAGS_EVENTS_QUEUE": f"events-{suffix}",
            "SERVICETAGS_REPORTS_CONTAINER": f"reports-{suffix}",
            "SERVICETAGS_NOTIFICATIONS_CONTAINER": f"notifications-{suffix}",
            "SERVICETAGS_MAIL_BACKEND": "smtp",
            "SERVICETAGS_SMTP_HOST": "127.0.0.1",
            "SERVICETAGS_MAIL_FROM": "servicetags-watch@example.com",
            "SERVICETAGS_RECIPIENTS": json.dumps([{"address": "network@example.com", "delivery": "report"}]),
            "SERVICETAGS_IDLE_SLEEP": str(setting.idle_sleep),
            "SERVICETAGS_VISIBILITY_TIMEOUT": "30",
        }
        settings = StorageSettings.from_env(Env(self.env))
        self.clients = StorageClients(settings)
        self.clients.ensure(
            [settings.reports_container, self.env["SERVICETAGS_NOTIFICATIONS_CONTAINER"]],
            [settings.events_queue, f"{settings.events_queue}-poison"],
        )
        self.reports = self.clients.container(settings.reports_container)
        try:
            self._start(notifiers)
        except BaseException:
            self.stop(remove=False)
            raise

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.dir / f"{name}.log").open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def _wait_for(self, path: Path, proc: subprocess.Popen, name: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / f"{name}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{name} did not start:\n{tail}")
            time.sleep(0.05)

    def _start(self, notifiers: int) -> None:
        sink = self._spawn(
            "smtp",
            [
                "-m",
                "devstack.smtp_sink",
                "--outbox",
                str(self.outbox),
                "--state-file",
                str(self.dir / "smtp.json"),
            ],
        )
        self._wait_for(self.dir / "smtp.json", sink, "smtp")
        self.env["SERVICETAGS_SMTP_PORT"] = str(json.loads((self.dir / "smtp.json").read_text())["port"])
        connection_string = self.env["SERVICETAGS_STORAGE_CONNECTION_STRING"]
        relay = self._spawn(
            "relay",
            [
                "-m",
                "devstack.relay",
                "--connection-string",
                connection_string,
                "--container",
                self.env["SERVICETAGS_REPORTS_CONTAINER"],
                "--queue",
                self.env["SERVICETAGS_EVENTS_QUEUE"],
                "--interval",
                str(self.setting.relay_interval),
                "--state-dir",
                str(self.dir / "relay"),
            ],
        )
        self._wait_for(self.dir / "relay" / "relay.json", relay, "relay")
        for i in range(notifiers):
            self._spawn(f"notifier-{i}", ["-m", "notifier"])

    def warm_up(self, report: tuple[str, bytes]) -> None:
        """One report through the whole chain: every process is up, imported and connected."""
        self.latency(report)

    def new_emails(self) -> list[Path]:
        fresh = [
            Path(e.path)
            for e in os.scandir(self.outbox)
            if e.name.endswith(".eml") and e.name not in self.seen
        ]
        self.seen.update(p.name for p in fresh)
        return fresh

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}; logs in {self.dir}")

    def latency(self, report: tuple[str, bytes]) -> float:
        name, data = report
        start = time.perf_counter()
        if not self.reports.create(name, data):
            raise RuntimeError(f"report {name} exists already")
        deadline = start + TIMEOUT
        while time.perf_counter() < deadline:
            fresh = self.new_emails()
            if fresh:
                elapsed = time.perf_counter() - start
                got = [_report_header(p) for p in fresh]
                if got != [name]:
                    raise RuntimeError(f"expected one e-mail for {name}, got {got}")
                return elapsed
            time.sleep(POLL)
        self._check_alive()
        raise RuntimeError(f"no e-mail for {name} within {TIMEOUT:.0f} s; logs in {self.dir}")

    def burst(self, reports: list[tuple[str, bytes]]) -> tuple[float, float, float]:
        """Write all at once; (seconds until all written, until all e-mailed, first to last e-mail)."""
        got: list[Path] = []
        first_mail = 0.0
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            if not all(pool.map(lambda r: self.reports.create(*r), reports)):
                raise RuntimeError("a burst report existed already")
        written = time.perf_counter() - start
        deadline = start + TIMEOUT + len(reports)
        while len(got) < len(reports):
            if time.perf_counter() > deadline:
                self._check_alive()
                raise RuntimeError(f"{len(got)} of {len(reports)} e-mails in time; logs in {self.dir}")
            fresh = self.new_emails()
            if fresh and not got:
                first_mail = time.perf_counter() - start
            got += fresh
            time.sleep(POLL)
        total = time.perf_counter() - start
        names = sorted(_report_header(p) for p in got)
        if names != sorted(n for n, _ in reports):
            raise RuntimeError("the burst's e-mails do not match its reports one to one")
        return written, total, total - first_mail

    def stop(self, *, remove: bool = True) -> None:
        for proc in reversed(self.procs):  # notifiers first, the sink last
            _stop(proc)
        for log in self.logs:
            log.close()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.stop(remove=exc_type is None)  # a failed run keeps its process logs


def p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            model,
        )
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def run_latency(
    connection_string: str, pool: list[tuple[str, bytes]], setting: Setting, reports: int, repeats: int
) -> None:
    rng = random.Random(4)
    rows = []
    for _ in range(repeats):
        with Stack(connection_string, setting, notifiers=1) as stack:
            picked = rng.sample(pool, reports + 1)
            stack.warm_up(picked[0])
            samples = []
            for report in picked[1:]:
                time.sleep(rng.uniform(0, setting.relay_interval + setting.idle_sleep))
                samples.append(stack.latency(report))
        rows.append((statistics.median(samples), p90(samples), max(samples), min(samples)))
    print(f"### Latency, {setting.label} ({reports} reports per run, one at a time)\n")
    print("| run | median (s) | p90 (s) | max (s) | min (s) |")
    print("|---:|---:|---:|---:|---:|")
    for i, (med, q90, top, low) in enumerate(rows, 1):
        print(f"| {i} | {med:.3f} | {q90:.3f} | {top:.3f} | {low:.3f} |")
    med, q90, top, low = (statistics.median(r[k] for r in rows) for k in range(4))
    print(f"| **median** | **{med:.3f}** | **{q90:.3f}** | **{top:.3f}** | {low:.3f} |\n")


def run_throughput(connection_string: str, pool: list[tuple[str, bytes]], burst: int, repeats: int) -> None:
    rng = random.Random(7)
    print(f"### Throughput, {FAST.label}: {burst} reports written at once\n")
    print(
        "| notifiers | run | writes done (s) | all e-mailed (s) | reports/s end to end "
        "| reports/s first to last e-mail |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for notifiers in (1, 2):
        rows = []
        for _ in range(repeats):
            with Stack(connection_string, FAST, notifiers=notifiers) as stack:
                picked = rng.sample(pool, burst + notifiers)
                for report in picked[:notifiers]:
                    stack.warm_up(report)
                rows.append(stack.burst(picked[notifiers:]))
        for i, (written, total, spread) in enumerate(rows, 1):
            print(
                f"| {notifiers} | {i} | {written:.2f} | {total:.2f} | {burst / total:.1f} "
                f"| {(burst - 1) / spread:.1f} |"
            )
        total = statistics.median(r[1] for r in rows)
        spread = statistics.median(r[2] for r in rows)
        print(
            f"| {notifiers} | **median** | {statistics.median(r[0] for r in rows):.2f} | **{total:.2f}** "
            f"| **{burst / total:.1f}** | **{(burst - 1) / spread:.1f}** |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=30, help="reports per latency run")
    parser.add_argument("--burst", type=int, default=60, help="reports per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pool = real_reports()
    if max(args.reports + 1, args.burst + 2) > len(pool):
        parser.error(f"only {len(pool)} distinct real reports with changes are available")
    print("## Notifier: report blob to e-mail file (Azurite, relay, notifier and SMTP sink processes)\n")
    print(f"Machine: {machine()}.\n")
    print(
        f"Reports: {len(pool)} distinct real change reports (pairs "
        f"{', '.join(f'cn{a}→{b}' for a, b in PAIRS)}, every region with changes); "
        f"one recipient matching everything; {args.repeats} runs per row, each on fresh processes, "
        "containers and queues, after one warm-up report per notifier.\n"
    )
    azurite = start_azurite()
    try:
        for setting in (FAST, DEFAULT):
            run_latency(azurite.connection_string, pool, setting, args.reports, args.repeats)
        run_throughput(azurite.connection_string, pool, args.burst, args.repeats)
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
