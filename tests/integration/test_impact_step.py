"""The impact step on Azurite: report BlobCreated events (the relay, one per queue, as two
Event Grid subscriptions on the same topic) to impact blobs and `rule_impact` records, with
rules from the local Resource Graph stand-in or from files; failures poison the impact
message only, and the notifier still delivers the report (over a real SMTP sink)."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.canonical import canonical_bytes
from core.layout import report_name, snapshot_name, to_json_bytes
from devstack.relay import BlobEventRelay, queue_deliverer
from devstack.resource_graph import ResourceGraphEndpoint
from devstack.smtp_sink import SmtpSink
from runtime.adapters.storage import StorageClients, StorageSettings
from runtime.config import Env
from runtime.queue_loop import Stats
from tests.conftest import ROOT, real_report, real_snapshot

pytestmark = pytest.mark.integration

RULES = ROOT / "tests" / "fixtures" / "rules" / "arm"
SUBSCRIPTIONS = "0b1f6471-1bf0-4dda-aec3-cb9272f09590,7d2a4c31-5e8f-4b6a-9c0d-1e2f3a4b5c6d"


@pytest.fixture(scope="module")
def graph() -> Iterator[ResourceGraphEndpoint]:
    with ResourceGraphEndpoint.from_files([RULES], page_size=5) as endpoint:
        yield endpoint


class Step:
    """Isolated containers and queues, two relays (notifier's and impact's queues), a sink."""

    def __init__(self, connection_string: str, graph: ResourceGraphEndpoint, outbox: Path) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.sink = SmtpSink(outbox).start()
        self.outbox = outbox
        self.env = {
            "SERVICETAGS_STORAGE_CONNECTION_STRING": connection_string,
            "SERVICETAGS_REPORTS_CONTAINER": f"reports-{suffix}",
            "SERVICETAGS_SNAPSHOTS_CONTAINER": f"snapshots-{suffix}",
            "SERVICETAGS_EVENTS_QUEUE": f"events-{suffix}",
            "SERVICETAGS_NOTIFICATIONS_CONTAINER": f"notifications-{suffix}",
            "SERVICETAGS_IMPACT_QUEUE": f"impact-{suffix}",
            "SERVICETAGS_IMPACT_CONTAINER": f"impact-{suffix}",
            "SERVICETAGS_IMPACT_SUBSCRIPTIONS": SUBSCRIPTIONS,
            "SERVICETAGS_RESOURCE_GRAPH_ENDPOINT": graph.url,
            "SERVICETAGS_RESOURCE_GRAPH_CA_BUNDLE": str(graph.ca_path),
            "SERVICETAGS_DEV_CREDENTIAL": "1",
            "SERVICETAGS_ARM_RETRIES": "1",
            "SERVICETAGS_ARM_RETRY_BACKOFF_MS": "10",
            "SERVICETAGS_MAIL_BACKEND": "smtp",
            "SERVICETAGS_SMTP_HOST": "127.0.0.1",
            "SERVICETAGS_SMTP_PORT": str(self.sink.port),
            "SERVICETAGS_MAIL_FROM": "servicetags-watch@example.com",
            "SERVICETAGS_RECIPIENTS": json.dumps([{"address": "network@example.com", "delivery": "report"}]),
            "SERVICETAGS_RETRY_DELAY": "0",
            "SERVICETAGS_IDLE_SLEEP": "0",
            "SERVICETAGS_VISIBILITY_TIMEOUT": "5",
            "SERVICETAGS_MAX_TRIES": "2",
            "SERVICETAGS_LOG_FORMAT": "json",
        }
        self.settings = StorageSettings.from_env(Env(self.env))
        self.clients = StorageClients(self.settings)
        s, e = self.settings, self.env
        self.containers = [
            s.reports_container,
            s.snapshots_container,
            e["SERVICETAGS_NOTIFICATIONS_CONTAINER"],
            e["SERVICETAGS_IMPACT_CONTAINER"],
        ]
        self.queues = [
            s.events_queue,
            f"{s.events_queue}-poison",
            e["SERVICETAGS_IMPACT_QUEUE"],
            f"{e['SERVICETAGS_IMPACT_QUEUE']}-poison",
        ]
        self.clients.ensure(self.containers, self.queues)
        self.reports = self.clients.container(s.reports_container)
        self.snapshots = self.clients.container(s.snapshots_container)
        self.impacts = self.clients.container(e["SERVICETAGS_IMPACT_CONTAINER"])
        self.impact_queue = self.clients.queue(e["SERVICETAGS_IMPACT_QUEUE"])
        self.impact_poison = self.clients.queue(f"{e['SERVICETAGS_IMPACT_QUEUE']}-poison")
        self.event_poison = self.clients.queue(f"{s.events_queue}-poison")
        self.relays = [
            BlobEventRelay(
                self.reports._client,
                account_name="devstoreaccount1",
                container=s.reports_container,
                deliver=queue_deliverer(queue._client),
                state_path=None,
            )
            for queue in (self.clients.queue(s.events_queue), self.impact_queue)
        ]

    def publish(self, old: int, new: int, region: str, *, with_snapshot: bool = True) -> str:
        """Write a real report (and its new snapshot, as the worker does) and relay its event."""
        report = real_report(old, new, region)
        if with_snapshot:
            code = next(t["region"] for t in report["tags"])
            self.snapshots.create(
                snapshot_name("Public", region, report["to"]["sha256"]),
                canonical_bytes(real_snapshot(new).select(code)),
            )
        name = report_name(report)
        self.reports.create(name, to_json_bytes(report))
        for relay in self.relays:
            relay.poll_once()
        return name

    def run_impact(self, **overrides: str) -> Stats:
        from impact.main import ImpactSettings, build_consumer

        settings = ImpactSettings.from_env(Env({**self.env, **overrides}))
        return build_consumer(settings, threading.Event()).run(until_empty=True)

    def notify(self) -> Stats:
        from notifier.main import NotifierSettings, build, queue_consumer

        settings = NotifierSettings.from_env(Env(self.env))
        return queue_consumer(settings, build(settings), threading.Event()).run(until_empty=True)

    def impact_doc(self, report: str) -> dict[str, Any] | None:
        blob = self.impacts.read(report)
        return json.loads(blob.data) if blob else None

    def poisoned(self) -> list[dict[str, Any]]:
        return [json.loads(m.content) for m in self.impact_poison.peek(32)]

    def emails(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(self.outbox.glob("*.eml"))
        ]

    def close(self) -> None:
        self.sink.stop()
        for name in self.containers:
            self.clients.blobs.delete_container(name)
        for name in self.queues:
            self.clients.queues.delete_queue(name)


@pytest.fixture
def step(azurite: Any, graph: ResourceGraphEndpoint, tmp_path: Path) -> Iterator[Step]:
    graph.state.fail_always(None)
    graph.state.requests.clear()
    s = Step(azurite.connection_string, graph, tmp_path / "outbox")
    try:
        yield s
    finally:
        graph.state.fail_always(None)
        s.close()


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def test_a_report_event_becomes_an_impact_blob_and_one_record_per_rule(
    step: Step, graph: ResourceGraphEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name = step.publish(340, 341, "israelcentral")
    assert step.run_impact() == Stats(processed=1)
    doc = step.impact_doc(name)
    assert doc is not None and doc["report"]["name"] == name
    assert doc["summary"]["mirrors_checked"] is True and doc["summary"]["rules_checked"] == 57
    affected = {(a["resource_name"], a["rule"]): a for a in doc["affected"]}
    # Copies of Storage.IsraelCentral, found through the report's snapshot blob.
    assert affected[("stisraelcopy", "networkAcls.ipRules")]["findings"][0]["add"] == ["20.153.42.0/24"]
    assert affected[("rt-israel-storage", "routes")]["findings"][0]["add"] == ["20.153.42.0/24"]
    logged = records(caplog, "rule_impact")
    assert sorted((r.resource_id, r.rule) for r in logged) == sorted(  # type: ignore[attr-defined]
        (a["resource_id"], a["rule"]) for a in doc["affected"]
    )
    assert next(r.findings for r in logged if r.rule == "networkAcls.ipRules")[:2] == [  # type: ignore[attr-defined]
        "ipRules copies Storage.IsraelCentral (7 of 7 ranges inside it)",
        "  add 20.153.42.0/24",
    ]
    # The same event again (at-least-once): nothing logged or written twice.
    caplog.clear()
    for relay in step.relays:
        relay._state.delivered.clear()
        relay.poll_once()
    assert step.run_impact() == Stats(processed=1)
    assert records(caplog, "rule_impact") == [] and len(records(caplog, "impact_exists")) == 1


def test_permanent_failure_poisons_the_impact_step_and_the_report_is_still_delivered(
    step: Step, graph: ResourceGraphEndpoint
) -> None:
    name = step.publish(341, 342, "westeurope", with_snapshot=False)
    graph.state.fail_always("403")
    assert step.run_impact() == Stats(poisoned=1)
    (poisoned,) = step.poisoned()
    assert poisoned["reason"].startswith("Azure Resource Graph (subscriptions 0b1f6471-")
    assert "HTTP 403 AuthorizationFailed; the identity needs Reader on the scope" in poisoned["reason"]
    assert step.impact_doc(name) is None
    assert step.notify() == Stats(processed=1)
    (mail,) = step.emails()
    assert "westeurope" in mail["Subject"] and step.event_poison.peek(1) == []


def test_transient_failure_is_retried_then_poisoned_with_the_reason(
    step: Step, graph: ResourceGraphEndpoint
) -> None:
    step.publish(341, 342, "westeurope", with_snapshot=False)
    graph.state.fail_always("503")
    stats = step.run_impact()
    assert (stats.retried, stats.poisoned) == (1, 1)
    (poisoned,) = step.poisoned()
    assert poisoned["reason"].startswith("failed 2 times; last error: TransientError: Azure Resource Graph")
    assert poisoned["reason"].endswith("HTTP 503 ServiceUnavailable")
    # Once Resource Graph answers again, `servicetags requeue` would finish it: the message is intact.
    graph.state.fail_always(None)
    step.impact_queue.send(poisoned["content"])
    assert step.run_impact() == Stats(processed=1)


def test_bad_rules_files_poison_with_file_and_resource_and_the_worker_goes_on(
    step: Step, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "zz-bad.json").write_text(
        json.dumps(
            [
                {
                    "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/ipGroups/broken",
                    "type": "Microsoft.Network/ipGroups",
                    "properties": {"ipAddresses": ["150.171.84.0/33"]},
                }
            ]
        )
    )
    first = step.publish(341, 342, "westeurope", with_snapshot=False)
    files = {"SERVICETAGS_RULES_SOURCE": "file", "SERVICETAGS_RULES_PATH": str(rules)}
    assert step.run_impact(**files) == Stats(poisoned=1)
    (poisoned,) = step.poisoned()
    assert poisoned["reason"] == (
        f"rules: {rules / 'zz-bad.json'}: resource /subscriptions/s/resourceGroups/g/"
        "providers/Microsoft.Network/ipGroups/broken: ipAddresses: '150.171.84.0/33' is not "
        "a valid address, range or CIDR prefix"
    )
    (rules / "zz-bad.json").unlink()
    second = step.publish(340, 341, "westeurope", with_snapshot=False)
    assert step.run_impact(**files) == Stats(processed=1)
    assert step.impact_doc(first) is None and step.impact_doc(second)["summary"]["rules_affected"] == 7


def test_the_impact_worker_as_a_process_reports_a_bad_setting_in_one_line(step: Step) -> None:
    env = {k: v for k, v in step.env.items() if not k.startswith("SERVICETAGS_IMPACT_SUBSCRIPTIONS")}
    result = subprocess.run(
        [sys.executable, "-m", "servicetags", "impact-worker", "--until-empty"],
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "servicetags impact-worker: set SERVICETAGS_IMPACT_SUBSCRIPTIONS (or "
        "AZURE_SUBSCRIPTION_ID) or SERVICETAGS_IMPACT_MANAGEMENT_GROUPS: the scopes whose "
        "rules are read\n"
    )


def test_killed_between_the_records_and_the_blob_the_redelivery_finishes_it(
    step: Step,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = step.publish(341, 342, "westeurope", with_snapshot=False)
    env = {
        "PATH": "/usr/bin:/bin",
        **step.env,
        "SERVICETAGS_CRASH_AT": "after_impact_records",
        "SERVICETAGS_VISIBILITY_TIMEOUT": "1",
    }
    victim = subprocess.run(
        [sys.executable, "-m", "impact", "--until-empty"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert victim.returncode == -9, victim.stderr
    logged = [json.loads(line) for line in victim.stdout.splitlines() if '"rule_impact"' in line]
    assert logged and step.impact_doc(name) is None  # the records went out, the blob did not
    caplog.set_level(logging.INFO)
    wait = step.run_impact(SERVICETAGS_VISIBILITY_TIMEOUT="1")
    assert wait == Stats(processed=1)
    doc = step.impact_doc(name)
    assert doc is not None and len(doc["affected"]) == len(logged)
    # At least once: the records are logged again rather than lost.
    assert len(records(caplog, "rule_impact")) == len(logged)
    # `servicetags requeue` knows the impact step's poison queue too.
    from servicetags.ops_command import requeue_main

    for key, value in step.env.items():
        monkeypatch.setenv(key, value)
    step.impact_poison.send(json.dumps({"content": "{}", "reason": "x"}))
    assert requeue_main(["--queue", "impact"], "servicetags requeue") == 0
    queue = step.env["SERVICETAGS_IMPACT_QUEUE"]
    assert capsys.readouterr().out == f"requeued 1 message from {queue}-poison to {queue}\n"
