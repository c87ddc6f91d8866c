"""Chaos, per-report e-mail: a change cycle with API faults while workers and the notifier are SIGKILLed at
random moments and restarted, notifiers also die between claiming and sending an e-mail,
workers lose their receipts (a one-second visibility under slow replies), a forger races
every genuine event with one carrying another account's URL, and Azurite restarts. Nothing
is lost, nothing is duplicated beyond the documented window, no link is forged."""

from __future__ import annotations

import email
import email.policy
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from core.change_report import change_report, index_of
from core.prefixes import PrefixParser
from devstack import stack
from devstack.arm_admin import ArmAdminClient
from runtime.adapters.storage import StorageClients, StorageSettings
from runtime.config import Env
from runtime.snapshot_files import load_snapshot
from tests.conftest import ROOT, snapshot_path

pytestmark = pytest.mark.e2e
CHAOS_SECONDS = 12  # about a dozen kills: enough to hit every step boundary with this seed


def expected_reports() -> dict[str, dict]:
    parser = PrefixParser()
    a, b = load_snapshot(snapshot_path(340), parser), load_snapshot(snapshot_path(341), parser)
    index = index_of(a, b)
    reports = {r: change_report(a, b, region=r, parser=parser, index=index) for r in [*index.names, "global"]}
    return {r: rep for r, rep in reports.items() if rep["tags"]}


# Notifiers: a claim (10 s) far longer than the event's retry window (20 tries, no delay:
# about 2 s per try), the case where a kill between claim and send lost the e-mail (issue 16).
NOTIFIER_ENV = {
    "SERVICETAGS_CLAIM_TIMEOUT": "10",
    "SERVICETAGS_RETRY_DELAY": "0",
    "SERVICETAGS_VISIBILITY_TIMEOUT": "2",
}
# A worker that stalls (SIGSTOP) just before deleting a message: its receipt expires and is
# superseded while it is stopped, as after a long GC pause or in a throttled container.
WORKER_ENV = {"stalled": {"SERVICETAGS_VISIBILITY_TIMEOUT": "1", "SERVICETAGS_STOP_AT": "before_delete"}}
ATTACKER = "https://attacker.blob.core.windows.net"
RECHECK = "westeurope,francecentral,japaneast"


class Fleet:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**os.environ, **env, "SERVICETAGS_LOG_LEVEL": "WARNING"}
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()
        self.started = 0

    def start(self, name: str, crash_at: str | None = None) -> None:
        module = "notifier" if name.startswith("notifier") else "worker"
        env = {**self.env, **(NOTIFIER_ENV if module == "notifier" else WORKER_ENV.get(name, {}))}
        if crash_at:
            env["SERVICETAGS_CRASH_AT"] = crash_at
        self.started += 1
        with (self.logs / f"{name}-{self.started}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            self.kills[name.rstrip("0123456789")] += 1
        process.wait()

    def stopped(self, name: str) -> bool:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return False
        stat = Path(f"/proc/{process.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def events(self) -> Counter[str]:
        return Counter(
            json.loads(line).get("event") for line in self.log_text().splitlines() if line.startswith("{")
        )

    def restart_crashed(self) -> None:
        """Start again whoever killed itself at a crash point (or died otherwise)."""
        for name, process in list(self.processes.items()):
            if name == "stalled":
                continue
            if process.poll() is not None:
                self.kills["crash point" if process.returncode == -signal.SIGKILL else "exit"] += 1
                self.start(name)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a stopped one handles no SIGTERM
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


def forged_event(subject: str) -> str:
    """An event for a real report whose URL points elsewhere, as an attacker with write access
    to the events queue (or a misrouted subscription) could send."""
    name = subject.split("/blobs/", 1)[1]
    return json.dumps(
        {
            "id": f"forged-{name}",
            "topic": "/subscriptions/x/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/attacker",
            "subject": subject,
            "eventType": "Microsoft.Storage.BlobCreated",
            "eventTime": "2026-11-24T10:00:00Z",
            "data": {
                "api": "PutBlob",
                "url": f"{ATTACKER}/reports/{name}",
                "eTag": "0x1",
                "blobType": "BlockBlob",
                "sequencer": "0" * 32,
            },
            "dataVersion": "",
            "metadataVersion": "1",
        }
    )


class Forger(threading.Thread):
    """Races every genuine event: as soon as a report blob exists, a forged event for it."""

    def __init__(self, clients: StorageClients) -> None:
        super().__init__(name="forger", daemon=True)
        self.clients, self.sent, self.stop = clients, [], threading.Event()

    def run(self) -> None:
        seen: set[str] = set()
        while not self.stop.wait(0.1):
            try:
                names = set(self.clients.container("reports").names()) - seen
                for name in sorted(names):
                    content = forged_event(f"/blobServices/default/containers/reports/blobs/{name}")
                    self.clients.queue("change-events").send(content)
                    self.sent.append(content)
                    seen.add(name)
            except Exception:  # Azurite restarting: try again next round
                continue


def test_kills_faults_expired_receipts_forgeries_and_restarts_lose_nothing(tmp_path):
    outbox = tmp_path / "outbox"
    state_dir = tmp_path / "stack"
    # One e-mail per report: the e-mails themselves are what this test counts (digests have their
    # own chaos test, test_chaos.py).
    per_report = json.dumps(
        [{"address": "network-team@example.com", "name": "Network team", "delivery": "report"}]
    )
    # Without the impact step (rules=None): it has its own crash and failure tests
    # (tests/integration/test_impact_step.py), and these e-mails carry no impact section.
    env = stack.up(
        state_dir,
        snapshot=snapshot_path(340),
        persistent=True,
        outbox=outbox,
        recipients=per_report,
        rules=None,
    )
    env.update(
        {
            "SERVICETAGS_VISIBILITY_TIMEOUT": "3",
            "SERVICETAGS_MAX_TRIES": "20",
            "SERVICETAGS_RETRY_DELAY": "1",
            "SERVICETAGS_IDLE_SLEEP": "0",
            "SERVICETAGS_ARM_RETRIES": "1",
            "SERVICETAGS_ARM_RETRY_BACKOFF_MS": "50",
        }
    )
    clients = StorageClients(StorageSettings.from_env(Env(env)))
    queues = {n: clients.queue(n) for n in stack.QUEUES}
    control = ArmAdminClient.from_state_dir(state_dir / "arm")
    fleet = Fleet(env, tmp_path / "logs")
    forger = Forger(clients)
    rng = random.Random(20261124)
    restarts = stalls = 0
    try:
        from producer.main import ProducerSettings, produce

        produce(ProducerSettings.from_env(Env(env)), run_id="baseline")
        baseline = subprocess.run(
            [sys.executable, "-m", "worker", "--until-empty"],
            cwd=ROOT,
            env=fleet.env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert baseline.returncode == 0, baseline.stderr[-2000:]

        control.set_snapshot(snapshot_path(341))
        control.set_fault_rate(0.25, seed=7)  # 429, 500, 503, resets, truncations, slow replies
        produce(ProducerSettings.from_env(Env(env)), run_id="change")
        forger.start()
        fleet.start("worker1")
        fleet.start("worker2")

        def start_first_notifier() -> None:
            # The first notifier dies holding its first claim, for certain: it starts once there
            # is a report to send, and is spared the random kills until then.
            if "notifier1" not in fleet.processes and forger.sent:
                fleet.start("notifier1", crash_at="before_send")

        started = time.monotonic()
        restart_at = started + CHAOS_SECONDS / 2

        def chaos_goes_on() -> bool:
            # At least CHAOS_SECONDS, and until a notifier died at its claim and one was killed
            # at random afterwards (reports, hence claims, come only after the workers' first
            # rounds), within a cap.
            elapsed = time.monotonic() - started
            return elapsed < CHAOS_SECONDS or (
                elapsed < 4 * CHAOS_SECONDS
                and not (
                    fleet.kills["crash point"] and fleet.kills["notifier"] and fleet.events()["receipt_lost"]
                )
            )

        while chaos_goes_on():
            time.sleep(rng.uniform(0.5, 2.0))
            fleet.restart_crashed()
            start_first_notifier()
            if restarts == 0 and time.monotonic() > restart_at:
                stack.restart_azurite(state_dir, pause=1.0)  # storage restarts under everyone
                restarts += 1
                continue
            if (
                time.monotonic() > restart_at
                and "stalled" not in fleet.processes
                and stalls < 5
                and not fleet.events()["receipt_lost"]
            ):
                stalls += 1
                fleet.start("stalled")
                if queues["regions"].depth() == 0:  # something for it to handle
                    produce(
                        ProducerSettings.from_env(Env({**env, "SERVICETAGS_REGIONS": RECHECK})),
                        run_id="recheck",
                    )
            if fleet.stopped("stalled"):
                # Its message's visibility runs out; another consumer receives it, so the stalled
                # worker's receipt no longer holds when it resumes and deletes (PopReceiptMismatch).
                time.sleep(1.5)
                list(
                    clients.queues.get_queue_client("regions").receive_messages(
                        max_messages=32, visibility_timeout=1
                    )
                )
                stalled = fleet.processes["stalled"]
                stalled.send_signal(signal.SIGCONT)
                time.sleep(0.5)
                stalled.kill()  # it would stop again at its next message
                stalled.wait()
                del fleet.processes["stalled"]
                continue
            spared = {"stalled", "notifier1" if fleet.kills["crash point"] == 0 else ""}
            victim = rng.choice(sorted(n for n in fleet.processes if n not in spared))
            fleet.kill(victim)
            # Half the notifiers restarted this way die again between their claim and send.
            fleet.start(
                victim,
                crash_at="before_send" if victim.startswith("notifier") and rng.random() < 0.5 else None,
            )
        control.set_fault_rate(0.0)

        expected = expected_reports()

        def settled() -> bool:
            fleet.restart_crashed()
            start_first_notifier()
            return (
                all(queues[q].depth() == 0 for q in ("regions", "change-events"))
                and len(list(clients.container("reports").names())) == len(expected)
                and len(list(outbox.glob("*.eml"))) >= len(expected)
            )

        end = time.monotonic() + 180
        while not settled() and time.monotonic() < end:
            time.sleep(0.5)
        assert settled(), {q: queues[q].depth() for q in stack.QUEUES}
    finally:
        forger.stop.set()
        forger.join(timeout=10)
        fleet.stop_all()
        queues_left = {n: q.depth() for n, q in queues.items()}
        poisoned = [json.loads(m.content) for m in queues["change-events-poison"].peek(32)]
        reports = {}
        for name in clients.container("reports").names():
            blob = clients.container("reports").read(name)
            assert blob is not None
            reports[name] = json.loads(blob.data)
        reports_url = clients.container("reports").url
        stack.down(state_dir)

    logs = fleet.log_text()
    assert "Traceback" not in logs, logs[-3000:]
    assert fleet.kills["worker"] >= 3 and fleet.kills["notifier"] >= 1, fleet.kills
    assert fleet.kills["crash point"] >= 1, fleet.kills  # killed between claim and send
    events = fleet.events()
    assert restarts == 1 and events["receipt_lost"] >= 1, (fleet.kills, events)
    # Every changed region has exactly one report, equal to servicetags diff's.
    by_region = Counter(r["region"] for r in reports.values())
    assert set(by_region) == set(expected) and set(by_region.values()) == {1}
    for report in reports.values():
        assert report == expected[report["region"]]
    # Every report produced exactly its e-mail; a duplicate could only come from a notifier
    # killed between sending and marking (the documented window), and would carry the same
    # Message-ID: none may carry a different one.
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(Path(outbox).glob("*.eml"))
    ]
    per_report = Counter(str(m["X-Servicetags-Report"]).strip() for m in mails)
    assert set(per_report) == set(reports)
    ids = {str(m["X-Servicetags-Report"]).strip(): set() for m in mails}
    for m in mails:
        ids[str(m["X-Servicetags-Report"]).strip()].add(m["Message-ID"])
    assert all(len(v) == 1 for v in ids.values())
    duplicates = sum(per_report.values()) - len(per_report)
    assert duplicates <= fleet.kills["notifier"], per_report
    # Every link is the configured account's: the forged events planted none, and suppressed none.
    for m in mails:
        name = str(m["X-Servicetags-Report"]).strip()
        text = m.get_body(preferencelist=("plain",)).get_content()
        assert f"Stored report: {reports_url}/{name}" in text and "attacker" not in m.as_string()
    # The forged events, and nothing else, are in the events' poison queue, each as forged.
    assert forger.sent and {p["content"] for p in poisoned} == set(forger.sent)
    assert all("refused as forged" in p["reason"] for p in poisoned)
    # Each run's deadline message (baseline, change, any recheck) waits, invisible, until its
    # deadline an hour away: by design.
    assert queues_left.pop("run-deadlines") >= 2
    assert {q: n for q, n in queues_left.items() if q != "change-events-poison"} == {
        "regions": 0,
        "regions-poison": 0,
        "change-events": 0,
        "run-deadlines-poison": 0,
        "impact": 0,
        "impact-poison": 0,
    }
