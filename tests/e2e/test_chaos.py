"""Chaos: a change cycle with API faults while workers and the notifier are SIGKILLed at
random moments and restarted, events are delivered twice, and channels answer 500 first.
Nothing is lost, nothing is duplicated: one report per changed region, one digest per run for
the recipient and for each channel."""

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


class Fleet:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env, "SERVICETAGS_LOG_LEVEL": "WARNING"}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()

    def start(self, name: str) -> None:
        module = "notifier" if name.startswith("notifier") else "worker"
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

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


def _receiver(env: dict[str, str], path: str, body: dict | None = None) -> list[dict]:
    import urllib.request

    url = env["SERVICETAGS_LOCAL_WEBHOOKS_URL"] + path
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data, method="POST" if data else "GET"), timeout=10
    ) as reply:
        text = reply.read()
    return json.loads(text) if text else []


def test_kills_and_api_faults_lose_nothing_and_duplicate_nothing(tmp_path):
    from devstack.demo import demo_channels

    outbox = tmp_path / "outbox"
    env = stack.up(
        tmp_path / "stack", snapshot=snapshot_path(340), persistent=False, outbox=outbox, rules=None
    )  # the impact step has its own crash tests (test_impact_step.py)
    env.update(demo_channels(env, "digest"))
    env["SERVICETAGS_DIGEST_DEADLINE"] = "3600"
    for path, answers in (
        ("/slack/demo-slack", [500, 500]),
        ("/teams/demo-teams", [503]),
        ("/webhook/demo-webhook", [500]),
    ):
        _receiver(env, "/_control", {"path": path, "answers": answers})
    env.update(
        {
            "SERVICETAGS_VISIBILITY_TIMEOUT": "3",
            "SERVICETAGS_MAX_TRIES": "20",
            "SERVICETAGS_RETRY_DELAY": "1",
            "SERVICETAGS_IDLE_SLEEP": "0",
            "SERVICETAGS_CLAIM_TIMEOUT": "3",
            "SERVICETAGS_ARM_RETRIES": "1",
            "SERVICETAGS_ARM_RETRY_BACKOFF_MS": "50",
        }
    )
    clients = StorageClients(StorageSettings.from_env(Env(env)))
    queues = {n: clients.queue(n) for n in stack.QUEUES}
    control = ArmAdminClient.from_state_dir(tmp_path / "stack" / "arm")
    fleet = Fleet(env)
    rng = random.Random(20261124)
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
        control.set_fault_rate(0.25, seed=7)
        produce(ProducerSettings.from_env(Env(env)), run_id="change")
        for name in ("worker1", "worker2", "notifier1"):
            fleet.start(name)
        deadline = time.monotonic() + CHAOS_SECONDS
        seen_events: set[str] = set()
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.5))
            seen_events.update(m.content for m in queues["change-events"].peek(32))
            victim = rng.choice(sorted(fleet.processes))
            fleet.kill(victim)
            fleet.start(victim)
        control.set_fault_rate(0.0)

        expected = expected_reports()

        def settled() -> bool:
            return (
                all(queues[q].depth() == 0 for q in ("regions", "change-events"))
                and len(list(clients.container("reports").names())) == len(expected)
                and all(
                    list(outbox.glob(p)) for p in ("*.eml", "*.teams.json", "*.slack.json", "*.webhook.json")
                )
            )

        end = time.monotonic() + 180
        while not settled() and time.monotonic() < end:
            time.sleep(0.5)
        assert settled(), {q: queues[q].depth() for q in stack.QUEUES}
        # Every event seen during the chaos, delivered again (the complete marker's included).
        seen_events.update(m.content for m in queues["change-events"].peek(32))
        for text in sorted(seen_events):
            queues["change-events"].send(text)
        end = time.monotonic() + 120
        while queues["change-events"].depth() and time.monotonic() < end:
            time.sleep(0.5)
        time.sleep(1)
        requests = _receiver(env, "/_requests")
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
    # The change run produced exactly one digest e-mail naming every changed region (the
    # baseline none); a duplicate could only come from a notifier killed between sending and
    # marking (the documented window), and would carry the same Message-ID.
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(Path(outbox).glob("*.eml"))
    ]
    assert {str(m["X-Servicetags-Run"]).strip() for m in mails} == {"change"}
    assert len({m["Message-ID"] for m in mails}) == 1
    assert str(mails[0]["X-Servicetags-Regions"]).strip().split(",") == sorted(expected)
    duplicates = len(mails) - 1
    # One message per channel: what was accepted, de-duplicated by body (Teams, Slack) or by
    # webhook-id (signed), after the scripted 500s and 503 were retried.
    accepted = [r for r in requests if 200 <= r["status"] < 300]
    kinds = Counter(r["kind"] for r in accepted)
    assert set(kinds) == {"teams", "slack", "webhook"}
    for kind in ("teams", "slack"):
        bodies = {Path(r["file"]).read_bytes() for r in accepted if r["kind"] == kind}
        assert len(bodies) == 1, kind
    assert len({r["headers"]["webhook-id"] for r in accepted if r["kind"] == "webhook"}) == 1
    assert all(r["verified"] for r in accepted if r["kind"] == "webhook")
    assert [r["status"] for r in requests if r["kind"] == "slack"][:2] == [500, 500]
    duplicates += sum(kinds.values()) - 3
    assert duplicates <= fleet.kills["notifier"], (kinds, len(mails))
    # Queues hold nothing but documented poison (none expected at this fault rate), and the
    # two runs' deadlines, not due for an hour.
    assert queues_left == {**{q: 0 for q in stack.QUEUES}, "run-deadlines": 2}
