"""Chaos: a change cycle with API faults while workers and the notifier are SIGKILLed at
random moments and restarted. Nothing is lost, nothing is duplicated."""

from __future__ import annotations

import email
import email.policy
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from common.adapters.storage import StorageClients, StorageSettings
from common.compare import compare, index_of
from common.config import Env
from common.prefixes import PrefixParser
from common.snapshot import load_snapshot
from devstack import stack
from devstack.arm_endpoint import ArmEndpointControl
from tests.conftest import ROOT, snapshot_path

pytestmark = pytest.mark.e2e
CHAOS_SECONDS = 20


def expected_reports() -> dict[str, dict]:
    parser = PrefixParser()
    a, b = load_snapshot(snapshot_path(340), parser), load_snapshot(snapshot_path(341), parser)
    index = index_of(a, b)
    reports = {r: compare(a, b, region=r, parser=parser, index=index) for r in [*index.names, "global"]}
    return {r: rep for r, rep in reports.items() if rep["tags"]}


class Fleet:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env, "SERVICETAGS_LOG_LEVEL": "WARNING"}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()

    def start(self, name: str) -> None:
        module = "notifier" if name.startswith("notifier") else "worker"
        self.processes[name] = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=self.env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            self.kills[name.rstrip("0123456789")] += 1
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_kills_and_api_faults_lose_nothing_and_duplicate_nothing(tmp_path):
    outbox = tmp_path / "outbox"
    env = stack.up(tmp_path / "stack", snapshot=snapshot_path(340), persistent=False, outbox=outbox)
    env.update({"SERVICETAGS_VISIBILITY_TIMEOUT": "3", "SERVICETAGS_MAX_TRIES": "20",
                "SERVICETAGS_RETRY_DELAY": "1", "SERVICETAGS_IDLE_SLEEP": "0",
                "SERVICETAGS_CLAIM_TIMEOUT": "3", "SERVICETAGS_ARM_RETRIES": "1",
                "SERVICETAGS_ARM_RETRY_BACKOFF_MS": "50"})
    clients = StorageClients(StorageSettings.from_env(Env(env)))
    queues = {n: clients.queue(n) for n in stack.QUEUES}
    control = ArmEndpointControl.from_state_dir(tmp_path / "stack" / "arm")
    fleet = Fleet(env)
    rng = random.Random(20261124)
    try:
        from producer.main import ProducerSettings, produce

        produce(ProducerSettings.from_env(Env(env)), run_id="baseline")
        baseline = subprocess.run([sys.executable, "-m", "worker", "--until-empty"], cwd=ROOT, env=fleet.env,
                                  capture_output=True, timeout=300, check=False)
        assert baseline.returncode == 0, baseline.stderr[-2000:]

        control.set_snapshot(snapshot_path(341))
        control.set_fault_rate(0.25, seed=7)
        produce(ProducerSettings.from_env(Env(env)), run_id="change")
        for name in ("worker1", "worker2", "notifier1"):
            fleet.start(name)
        deadline = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.5))
            victim = rng.choice(sorted(fleet.processes))
            fleet.kill(victim)
            fleet.start(victim)
        control.set_fault_rate(0.0)

        expected = expected_reports()

        def settled() -> bool:
            return (all(queues[q].depth() == 0 for q in ("regions", "change-events"))
                    and len(list(clients.container("reports").names())) == len(expected)
                    and len(list(outbox.glob("*.eml"))) >= len(expected))

        end = time.monotonic() + 180
        while not settled() and time.monotonic() < end:
            time.sleep(0.5)
        assert settled(), {q: queues[q].depth() for q in stack.QUEUES}
    finally:
        fleet.stop_all()
        control_state = tmp_path / "stack"
        queues_left = {n: q.depth() for n, q in queues.items()}
        reports = {}
        for name in clients.container("reports").names():
            blob = clients.container("reports").read(name)
            assert blob is not None
            reports[name] = json.loads(blob.data)
        stack.down(control_state)

    assert fleet.kills["worker"] >= 3 and fleet.kills["notifier"] >= 1, fleet.kills
    # Every changed region has exactly one report, equal to servicetags diff's.
    by_region = Counter(r["region"] for r in reports.values())
    assert set(by_region) == set(expected) and set(by_region.values()) == {1}
    for report in reports.values():
        assert report == expected[report["region"]]
    # Every report produced exactly its e-mail; a duplicate could only come from a notifier
    # killed between sending and marking (the documented window), and would carry the same
    # Message-ID: none may carry a different one.
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in sorted(Path(outbox).glob("*.eml"))]
    per_report = Counter(str(m["X-Servicetags-Report"]).strip() for m in mails)
    assert set(per_report) == set(reports)
    ids = {str(m["X-Servicetags-Report"]).strip(): set() for m in mails}
    for m in mails:
        ids[str(m["X-Servicetags-Report"]).strip()].add(m["Message-ID"])
    assert all(len(v) == 1 for v in ids.values())
    duplicates = sum(per_report.values()) - len(per_report)
    assert duplicates <= fleet.kills["notifier"], per_report
    # Queues hold nothing but documented poison (none expected at this fault rate).
    assert queues_left == {q: 0 for q in stack.QUEUES}
