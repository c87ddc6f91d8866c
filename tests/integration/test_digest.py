"""One digest per run and recipient/channel, on Azurite with the real worker, relay, SMTP sink,
webhook receiver and notifier: completion as an event, the deadline, duplicates, failing channels."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.relay import BlobEventRelay, queue_deliverer, webhook_deliverer
from devstack.runs_relay import RunMarkers
from devstack.smtp_sink import SmtpSink
from devstack.tcp_ports import free_port, port_is_open
from devstack.webhook_receiver import Receiver
from runtime.config import Env
from tests.conftest import ROOT, snapshot_path
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration
REGIONS = "francecentral,germanywestcentral,japaneast,westeurope"


class Rig:
    """An isolated pipeline plus everything that turns its runs into digests."""

    def __init__(self, azurite, arm_endpoint, tmp_path: Path, **overrides: str) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.outbox = tmp_path / "outbox"
        self.sink = SmtpSink(self.outbox).start()
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.receiver = Receiver(self.outbox, [self.secret]).start()
        base = self.receiver.url
        channels = [
            {"name": "t", "type": "teams", "url_secret": "t-url"},
            {"name": "s", "type": "slack", "url_secret": "s-url"},
            {"name": "w", "type": "webhook", "url_secret": "w-url", "signing_secrets": ["w-key"]},
        ]
        self.p = Pipeline(
            azurite.connection_string,
            arm_endpoint.url,
            str(arm_endpoint.ca_path),
            **{
                "SERVICETAGS_EVENTS_QUEUE": f"events-{suffix}",
                "SERVICETAGS_NOTIFICATIONS_CONTAINER": f"notifications-{suffix}",
                "SERVICETAGS_RUNS_CONTAINER": f"runs-{suffix}",
                "SERVICETAGS_DEADLINES_QUEUE": f"deadlines-{suffix}",
                "SERVICETAGS_MAIL_BACKEND": "smtp",
                "SERVICETAGS_SMTP_HOST": "127.0.0.1",
                "SERVICETAGS_SMTP_PORT": str(self.sink.port),
                "SERVICETAGS_MAIL_FROM": "watch@example.com",
                "SERVICETAGS_RECIPIENTS": json.dumps(
                    [
                        {"address": "all@example.com"},
                        {"address": "tokyo@example.com", "regions": ["japaneast"]},
                    ]
                ),
                "SERVICETAGS_CHANNELS": json.dumps(channels),
                "SERVICETAGS_SECRET_T_URL": f"{base}/teams/t",
                "SERVICETAGS_SECRET_S_URL": f"{base}/slack/s",
                "SERVICETAGS_SECRET_W_URL": f"{base}/webhook/w",
                "SERVICETAGS_SECRET_W_KEY": self.secret,
                "SERVICETAGS_DIGEST_DEADLINE": "3600",
                **overrides,
            },
        )
        from notifier.main import NotifierSettings, build

        self.settings = NotifierSettings.from_env(Env(self.p.env))
        self.wiring = build(self.settings)  # creates the notifier's containers and queues
        clients = self.p.clients
        self.events = clients.queue(self.p.env["SERVICETAGS_EVENTS_QUEUE"])
        self.relays = [
            BlobEventRelay(
                clients.container(name),
                account_name="devstoreaccount1",
                container=name,
                deliver=queue_deliverer(self.events._client),
                state_path=None,
            )
            for name in (self.p.settings.reports_container, self.settings.runs_container)
        ]

    def run(self, cn: int, arm_endpoint, run_id: str, **env: str) -> None:
        arm_endpoint.set_snapshot(snapshot_path(cn))
        self.p.env.update(env)
        self.p.produce(REGIONS, run_id=run_id)
        self.p.work()

    def relay(self) -> int:
        return sum(r.poll_once() for r in self.relays)

    def notify(self) -> None:
        from notifier.main import run_queues

        run_queues(self.settings, self.wiring, threading.Event(), until_empty=True)

    def files(self, pattern: str) -> list[Path]:
        return sorted(self.outbox.glob(pattern))

    def emails(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in self.files("*.eml")
        ]

    def close(self) -> None:
        self.sink.stop()
        self.receiver.stop()
        s, blobs, queues = self.settings, self.p.clients.blobs, self.p.clients.queues
        for name in (s.notifications_container, s.runs_container):
            blobs.delete_container(name)
        for name in (s.storage.events_queue, s.deadlines_queue):
            queues.delete_queue(name)
            queues.delete_queue(f"{name}-poison")
        self.p.cleanup()


@pytest.fixture
def rig(azurite, arm_endpoint, tmp_path) -> Iterator[Rig]:
    r = Rig(azurite, arm_endpoint, tmp_path)
    try:
        yield r
    finally:
        r.close()


def deliveries(rig: Rig) -> Counter[str]:
    return Counter(
        {
            "eml": len(rig.files("*.eml")),
            "teams": len(rig.files("*.teams.json")),
            "slack": len(rig.files("*.slack.json")),
            "webhook": len(rig.files("*.webhook.json")),
        }
    )


def test_one_digest_per_run_and_recipient_or_channel_whatever_the_redelivery(rig, arm_endpoint, caplog):
    caplog.set_level(logging.DEBUG)
    rig.run(340, arm_endpoint, "baseline")
    rig.relay()
    rig.notify()
    assert deliveries(rig) == Counter({"eml": 0, "teams": 0, "slack": 0, "webhook": 0})  # a silent baseline

    rig.receiver.script("/slack/s", answers=[500, 503])  # then 200: the poster retries in-process
    rig.receiver.script("/webhook/w", answers=[429], retry_after=1)
    rig.run(341, arm_endpoint, "change", SERVICETAGS_DIGEST_DEADLINE="1")
    complete = rig.p.clients.container(rig.settings.runs_container).read("Public/change/complete.json")
    assert complete is not None and json.loads(complete.data)["regions"] == 5
    assert rig.relay() > 0
    events = [m.content for m in rig.events.peek(32)]
    rig.notify()
    assert deliveries(rig) == Counter({"eml": 2, "teams": 1, "slack": 1, "webhook": 1})

    # Every event again, twice, the deadline now due, and two notifiers at once: nothing new.
    for text in events * 2:
        rig.events.send(text)
    time.sleep(1.2)
    threads = [threading.Thread(target=rig.notify) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert deliveries(rig) == Counter({"eml": 2, "teams": 1, "slack": 1, "webhook": 1})
    assert rig.events.depth() == 0

    mails = {m["To"].addresses[0].addr_spec: m for m in rig.emails()}
    changed = ["francecentral", "germanywestcentral", "global", "japaneast", "westeurope"]
    assert str(mails["all@example.com"]["X-Servicetags-Regions"]).strip() == ",".join(changed)
    assert str(mails["tokyo@example.com"]["X-Servicetags-Regions"]).strip() == "japaneast"
    text = mails["all@example.com"].get_body(("plain",)).get_content()
    assert "germanywestcentral  AzureCloud.germanywc" in text and "+33,280/-0" in text
    [hook] = [json.loads(p.read_bytes()) for p in rig.files("*.webhook.json")]
    assert hook["schema"] == "servicetags.digest/v1" and [c["region"] for c in hook["changes"]] == changed
    requests = rig.receiver.requests
    statuses = {k: [r["status"] for r in requests if r["kind"] == k] for k in ("slack", "webhook", "teams")}
    assert statuses == {"slack": [500, 503, 200], "webhook": [429, 204], "teams": [202]}
    signed = [r for r in requests if r["kind"] == "webhook"]
    assert len({r["headers"]["webhook-id"] for r in signed}) == 1 and signed[-1]["verified"]
    # The URLs and the signing secret are credentials: in no blob the pipeline wrote, no log line.
    credentials = [
        rig.secret,
        rig.receiver.url + "/teams/t",
        rig.receiver.url + "/slack/s",
        rig.receiver.url + "/webhook/w",
    ]
    for container in (
        rig.settings.notifications_container,
        rig.settings.runs_container,
        rig.p.settings.reports_container,
        rig.p.settings.snapshots_container,
    ):
        store = rig.p.clients.container(container)
        for name in store.names():
            data = store.read(name).data.decode()  # type: ignore[union-attr]
            assert not any(c in data for c in credentials), name
    assert not any(
        c in record.getMessage() or c in str(record.__dict__)
        for record in caplog.records
        for c in credentials
    )


def test_the_deadline_sends_the_digest_naming_regions_not_checked_and_poisoned(rig, arm_endpoint):
    rig.run(340, arm_endpoint, "baseline")
    arm_endpoint.set_snapshot(snapshot_path(341))
    arm_endpoint.fail_always("japaneast", "500")
    rig.p.env["SERVICETAGS_DIGEST_DEADLINE"] = "8"
    started = time.monotonic()
    rig.p.produce(REGIONS, run_id="stuck")
    # A worker hangs on westeurope: its message is out of the queue while the others are worked
    # (deleted here, so the draining worker does not wait for it; it comes back below).
    held, others = None, []
    while (m := rig.p.queue.receive(60)) is not None:
        if json.loads(m.content)["region"] == "westeurope":
            held = m
        else:
            others.append(m)
    assert held is not None
    rig.p.queue.delete(held)
    for m in others:
        rig.p.queue.extend(m, 0)
    rig.p.work()
    assert [json.loads(p["content"])["region"] for p in rig.p.poisoned()] == ["japaneast"]
    runs = rig.p.clients.container(rig.settings.runs_container)
    assert runs.read("Public/stuck/complete.json") is None
    poisoned = json.loads(runs.read("Public/stuck/regions/japaneast.json").data)  # type: ignore[union-attr]
    assert poisoned["status"] == "poisoned" and "500" in poisoned["reason"]
    rig.relay()
    rig.notify()
    assert time.monotonic() - started < 8, "too slow to see the run before its deadline"
    assert deliveries(rig)["eml"] == 0  # before the deadline: nothing
    time.sleep(max(0.0, started + 8.3 - time.monotonic()))
    rig.notify()
    assert deliveries(rig) == Counter({"eml": 2, "teams": 1, "slack": 1, "webhook": 1})
    mails = {m["To"].addresses[0].addr_spec: m for m in rig.emails()}
    text = mails["all@example.com"].get_body(("plain",)).get_content()
    assert "Not checked by the deadline (1): westeurope" in text
    assert "Gave up on (poisoned): japaneast" in text
    # The Tokyo recipient hears that its region was given up on, with nothing else.
    tokyo = mails["tokyo@example.com"].get_body(("plain",)).get_content()
    assert "Gave up on (poisoned): japaneast" in tokyo and "westeurope" not in tokyo
    [slack] = [json.loads(p.read_bytes()) for p in rig.files("*.slack.json")]
    assert "Not checked by the deadline (1): westeurope" in slack["blocks"][1]["text"]["text"]

    # The hung worker finishes after all: the run completes, and nobody is told twice.
    rig.p.queue.send(held.content)
    rig.p.work()
    assert runs.read("Public/stuck/complete.json") is not None
    rig.relay()
    rig.notify()
    assert deliveries(rig) == Counter({"eml": 2, "teams": 1, "slack": 1, "webhook": 1})


def test_per_report_channels_and_a_refusing_channel_poisons_only_its_delivery(
    azurite, arm_endpoint, tmp_path
):
    channels = [
        {"name": "t", "type": "teams", "url_secret": "t-url", "delivery": "report"},
        {"name": "s", "type": "slack", "url_secret": "s-url", "delivery": "report"},
        {
            "name": "w",
            "type": "webhook",
            "url_secret": "w-url",
            "signing_secrets": ["w-key"],
            "delivery": "report",
        },
    ]
    rig = Rig(
        azurite,
        arm_endpoint,
        tmp_path,
        SERVICETAGS_CHANNELS=json.dumps(channels),
        SERVICETAGS_RECIPIENTS=json.dumps([{"address": "all@example.com", "delivery": "report"}]),
    )
    try:
        rig.run(340, arm_endpoint, "baseline")
        rig.receiver.script("/teams/t", answers=[400])  # a broken flow: permanent for that one report
        rig.run(341, arm_endpoint, "change")
        rig.relay()
        rig.notify()
        got = deliveries(rig)
        assert got == Counter({"eml": 5, "teams": 4, "slack": 5, "webhook": 5})
        poisoned = [
            json.loads(m.content)
            for m in rig.p.clients.queue(f"{rig.settings.storage.events_queue}-poison").peek(32)
        ]
        assert len(poisoned) == 1 and "channel t: HTTP 400" in poisoned[0]["reason"]
        bodies = [json.loads(p.read_bytes()) for p in rig.files("*.webhook.json")]
        assert sorted(b["region"] for b in bodies) == sorted([*REGIONS.split(","), "global"])
        assert all(b["schema"] == "servicetags.change-report/v1" for b in bodies)
    finally:
        rig.close()


def test_a_worker_killed_after_recording_an_outcome_leaves_the_run_to_complete(rig, arm_endpoint):
    rig.run(340, arm_endpoint, "baseline")
    arm_endpoint.set_snapshot(snapshot_path(341))
    rig.p.produce(REGIONS, run_id="crash")
    crashed = rig.p.spawn_worker(SERVICETAGS_CRASH_AT="after_outcome")
    crashed.communicate(timeout=120)
    assert crashed.returncode == -9  # SIGKILL right after the first outcome was written
    runs = rig.p.clients.container(rig.settings.runs_container)
    assert len(list(runs.names("Public/crash/regions/"))) == 1
    assert runs.read("Public/crash/complete.json") is None
    # The redelivered message finds its outcome written and checks for completion again.
    rig.p.work(SERVICETAGS_VISIBILITY_TIMEOUT="1")
    assert len(list(runs.names("Public/crash/regions/"))) == 5
    assert runs.read("Public/crash/complete.json") is not None
    rig.relay()
    rig.notify()
    assert deliveries(rig) == Counter({"eml": 2, "teams": 1, "slack": 1, "webhook": 1})


def _wait(condition, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_notifier_serve_sends_the_digest_on_the_complete_event_and_closes_late_runs_at_the_deadline(
    rig, arm_endpoint
):
    rig.run(340, arm_endpoint, "baseline")
    rig.run(341, arm_endpoint, "change")  # deadline in an hour: only complete.json can close it now
    port, secret = free_port(), secrets.token_urlsafe(24)
    env = {
        **os.environ,
        **rig.p.env,
        "SERVICETAGS_WEBHOOK_HOST": "127.0.0.1",
        "SERVICETAGS_WEBHOOK_PORT": str(port),
        "SERVICETAGS_WEBHOOK_SECRET": secret,
        "SERVICETAGS_IDLE_SLEEP": "1",
    }
    notifier = subprocess.Popen(
        [sys.executable, "-m", "notifier", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait(lambda: port_is_open("127.0.0.1", port), 30), "the webhook did not start"
        # Event Grid's push delivery over real HTTP: the reports' events, then the runs' markers.
        url = f"http://127.0.0.1:{port}/api/events?code={secret}"
        relays = [
            BlobEventRelay(
                rig.p.clients.container(name),
                account_name="devstoreaccount1",
                container=name,
                deliver=webhook_deliverer(url),
                state_path=None,
                schema=schema,
            )
            for name, schema in (
                (rig.p.settings.reports_container, "eventgrid"),
                (rig.settings.runs_container, "cloudevents"),
            )
        ]
        # Unfiltered (Azure filters on the subject): 5 reports; per run a manifest, 5 outcomes, a
        # complete marker. Only the markers close runs, the other runs blobs are acknowledged.
        assert [r.poll_once() for r in relays] == [5, 14]
        assert deliveries(rig) == Counter({"eml": 2, "teams": 1, "slack": 1, "webhook": 1})
        [hook] = [json.loads(p.read_bytes()) for p in rig.files("*.webhook.json")]
        assert (hook["run_id"], hook["closed_by"], hook["missing"]) == ("change", "complete", [])
        mails = {m["To"].addresses[0].addr_spec: m for m in rig.emails()}
        assert str(mails["tokyo@example.com"]["X-Servicetags-Regions"]).strip() == "japaneast"
        # Event Grid redelivers: every event once more, nothing is sent twice.
        again = BlobEventRelay(
            RunMarkers(rig.p.clients.container(rig.settings.runs_container)._client),
            account_name="devstoreaccount1",
            container=rig.settings.runs_container,
            deliver=webhook_deliverer(url),
            state_path=None,
        )
        assert again.poll_once() == 2
        assert deliveries(rig) == Counter({"eml": 2, "teams": 1, "slack": 1, "webhook": 1})

        # A run that never completes (no worker here) is closed by its deadline in this mode too.
        rig.p.env["SERVICETAGS_DIGEST_DEADLINE"] = "1"
        rig.p.produce(REGIONS, run_id="late")
        assert _wait(lambda: deliveries(rig)["webhook"] == 2, 30), "the deadline did not close the run"
        late = [
            d
            for d in (json.loads(p.read_bytes()) for p in rig.files("*.webhook.json"))
            if d["run_id"] == "late"
        ]
        assert [(d["closed_by"], d["missing"]) for d in late] == [
            ("deadline", ["francecentral", "germanywestcentral", "global", "japaneast", "westeurope"])
        ]
        notifier.send_signal(signal.SIGTERM)
        output, _ = notifier.communicate(timeout=20)
    finally:
        if notifier.poll() is None:
            notifier.kill()
            notifier.communicate()
    assert notifier.returncode == 0, output
    # The entry point's SIGTERM handling stopped the server: one start line, one stop line.
    assert output.count('"webhook_listening"') == 1 and output.count('"webhook_stopped"') == 1, output
    assert secret not in output
