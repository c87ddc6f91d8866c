"""The notifier with the real SMTP sink and ACS fake, its storage on Azurite (events from the
real relay) and in memory (the `stores` fixture): claims, delivery and poison, the same tests."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest

from core.change_report import change_report, index_of
from core.layout import report_name, to_json_bytes
from core.prefixes import PrefixParser
from devstack.relay import BlobEventRelay, account_resource_id, blob_created_event, queue_deliverer
from devstack.smtp_sink import SmtpSink
from runtime.adapters.memory import MemoryBlobStore, MemoryQueue
from runtime.adapters.storage import StorageSettings
from runtime.config import Env
from runtime.snapshot_files import load_snapshot
from tests.conftest import ROOT, snapshot_path
from tests.integration.conftest import Stores

pytestmark = pytest.mark.integration
PARSER = PrefixParser()
# Per-report delivery: these tests are about one e-mail per report (digests: test_digest.py).
RECIPIENTS = [
    {"address": "network@example.com", "name": "Network team", "delivery": "report"},
    {"address": "storage@example.com", "tags": ["Storage*"], "delivery": "report"},
    {"address": "tokyo@example.com", "regions": ["japaneast"], "delivery": "report"},
]


@cache
def real_report(region: str, old: int = 340, new: int = 341) -> dict:
    a, b = load_snapshot(snapshot_path(old), PARSER), load_snapshot(snapshot_path(new), PARSER)
    return change_report(a, b, region=region, parser=PARSER, index=index_of(a, b))


class MemoryRelay:
    """The relay's work over an in-memory container, where Event Grid has no stand-in: one
    BlobCreated event (the relay's own shape, base64 as Event Grid puts it on a queue) for
    each blob and ETag not yet announced."""

    def __init__(self, reports: MemoryBlobStore, queue: MemoryQueue, container: str) -> None:
        self.reports, self.queue, self.container = reports, queue, container
        self.topic = account_resource_id(
            "00000000-0000-0000-0000-000000000000", "servicetags-local", "devstoreaccount1"
        )
        self.delivered: set[tuple[str, str]] = set()

    def poll_once(self) -> int:
        count = 0
        for name in self.reports.names():
            blob = self.reports.read(name)
            if blob is None or (name, blob.etag) in self.delivered:
                continue
            self.delivered.add((name, blob.etag))
            event = blob_created_event(
                schema="eventgrid",
                topic=self.topic,
                container=self.container,
                name=name,
                url=self.reports.blob_url(name),
                etag=blob.etag.strip('"'),
                content_type="application/json",
                content_length=len(blob.data),
                blob_type="BlockBlob",
                created=datetime.now(UTC),
                sequencer=len(self.delivered),
            )
            self.queue.send(base64.b64encode(json.dumps(event).encode()).decode())
            count += 1
        return count


class Bench:
    """One isolated notifier setup: its own containers and queues, a sink, a relay."""

    def __init__(self, stores: Stores, outbox: Path, **overrides: str) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.stores = stores
        self.sink = SmtpSink(outbox).start()
        self.outbox = outbox
        self.env = {
            "SERVICETAGS_STORAGE_CONNECTION_STRING": stores.connection_string,
            "SERVICETAGS_EVENTS_QUEUE": f"events-{suffix}",
            "SERVICETAGS_REPORTS_CONTAINER": f"reports-{suffix}",
            "SERVICETAGS_NOTIFICATIONS_CONTAINER": f"notifications-{suffix}",
            "SERVICETAGS_MAIL_BACKEND": "smtp",
            "SERVICETAGS_SMTP_HOST": "127.0.0.1",
            "SERVICETAGS_SMTP_PORT": str(self.sink.port),
            "SERVICETAGS_MAIL_FROM": "servicetags-watch@example.com",
            "SERVICETAGS_RECIPIENTS": json.dumps(RECIPIENTS),
            "SERVICETAGS_RETRY_DELAY": "0",
            "SERVICETAGS_IDLE_SLEEP": "0",
            "SERVICETAGS_VISIBILITY_TIMEOUT": "5",
            "SERVICETAGS_MAX_TRIES": "3",
            **overrides,
        }
        self.settings = StorageSettings.from_env(Env(self.env))
        self.clients = stores.clients(self.settings)
        s = self.settings
        self.clients.ensure(
            [s.reports_container, self.env["SERVICETAGS_NOTIFICATIONS_CONTAINER"]],
            [s.events_queue, f"{s.events_queue}-poison"],
        )
        self.reports = self.clients.container(s.reports_container)
        self.queue = self.clients.queue(s.events_queue)
        self.poison = self.clients.queue(f"{s.events_queue}-poison")
        self.relay_state = outbox.parent / f"relay-{suffix}.json"
        self._memory_relay = (
            MemoryRelay(self.reports, self.queue, s.reports_container) if stores.kind == "memory" else None
        )

    def relay(self) -> BlobEventRelay | MemoryRelay:
        """The relay, remembering what it delivered (in `relay_state` on Azurite)."""
        if self._memory_relay is not None:
            return self._memory_relay
        return BlobEventRelay(
            self.reports.client,
            account_name="devstoreaccount1",
            container=self.settings.reports_container,
            deliver=queue_deliverer(self.queue._client),
            state_path=self.relay_state,
        )

    def forget_relayed(self) -> None:
        """A relay that lost its memory: the next poll replays everything."""
        if self._memory_relay is not None:
            self._memory_relay.delivered.clear()
        else:
            self.relay_state.unlink()

    def write_report(self, report: dict) -> str:
        name = report_name(report)
        assert self.reports.create(name, to_json_bytes(report))
        return name

    def notify(self, **overrides: str):
        from notifier.main import NotifierSettings, build, queue_consumer

        settings = NotifierSettings.from_env(Env({**self.env, **overrides}))
        return queue_consumer(settings, build(settings), threading.Event()).run(until_empty=True)

    def emails(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(self.outbox.glob("*.eml"))
        ]

    def poisoned(self) -> list[dict]:
        return [json.loads(m.content) for m in self.poison.peek(32)]

    def close(self) -> None:
        self.sink.stop()
        s = self.settings
        self.stores.drop(
            self.clients,
            [s.reports_container, self.env["SERVICETAGS_NOTIFICATIONS_CONTAINER"]],
            [s.events_queue, f"{s.events_queue}-poison"],
        )


@pytest.fixture
def bench(stores, tmp_path) -> Iterator[Bench]:
    b = Bench(stores, tmp_path / "outbox")
    try:
        yield b
    finally:
        b.close()


def by_recipient(messages: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for m in messages:
        out.setdefault(m["To"].addresses[0].addr_spec, []).append(m)
    return out


def body_text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_one_email_per_report_per_matching_recipient_with_subject_counts_and_ranges(bench):
    names = [bench.write_report(real_report(r)) for r in ("francecentral", "global")]
    assert bench.relay().poll_once() == 2
    stats = bench.notify()
    assert stats.processed == 2 and stats.poisoned == 0
    mails = by_recipient(bench.emails())
    assert sorted(mails) == ["network@example.com", "storage@example.com"]  # nothing for tokyo
    assert len(mails["network@example.com"]) == 2
    france = next(m for m in mails["network@example.com"] if m["X-Servicetags-Region"] == "francecentral")
    assert "francecentral" in france["Subject"] and "340 → 341" in france["Subject"]
    assert france["X-Servicetags-Report"].strip() == names[0]
    text = body_text(france)
    assert "AzureCloud.centralfrance" in text and "20.95.113.0/24" in text and "151.206.94.0/23" in text
    html = france.get_body(preferencelist=("html",)).get_content()
    assert "20.95.113.0/24" in html
    attached = next(p for p in france.iter_attachments() if p.get_content_type() == "application/json")
    assert json.loads(attached.get_content()) == real_report("francecentral")
    # The storage team asked for Storage* only: it gets the global report, cut to those tags.
    [storage] = mails["storage@example.com"]
    assert storage["X-Servicetags-Region"] == "global"
    cut = json.loads(next(storage.iter_attachments()).get_content())
    assert cut["tags"] and all(t["id"].lower().startswith("storage") for t in cut["tags"])
    assert cut["summary"]["tags_changed"] == len(cut["tags"])


def test_duplicate_replayed_and_out_of_order_events_send_no_second_email(bench):
    first = bench.write_report(real_report("francecentral"))
    second = bench.write_report(real_report("germanywestcentral"))
    relay = bench.relay()
    assert relay.poll_once() == 2
    events = [m.content for m in bench.queue.peek(32)]
    for content in reversed(events):  # each event again, in the opposite order
        bench.queue.send(content)
    bench.notify()
    assert len(bench.emails()) == 2  # one report each for the network team
    bench.forget_relayed()
    assert bench.relay().poll_once() == 2
    stats = bench.notify()
    assert stats.processed == 2 and stats.poisoned == 0
    mails = bench.emails()
    assert len(mails) == 2
    assert sorted(m["X-Servicetags-Report"].strip() for m in mails) == sorted([first, second])


def _event(subject: str, url: str, event_type: str = "Microsoft.Storage.BlobCreated", **data: object) -> str:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "topic": "/subscriptions/x/resourceGroups/r/providers/"
            "Microsoft.Storage/storageAccounts/devstoreaccount1",
            "subject": subject,
            "eventType": event_type,
            "eventTime": "2026-11-24T10:00:00.0000000Z",
            "data": {
                "api": "PutBlob",
                "url": url,
                "eTag": "0x1",
                "contentType": "application/json",
                "contentLength": 10,
                "blobType": "BlockBlob",
                "sequencer": "0" * 32,
                **data,
            },
            "dataVersion": "",
            "metadataVersion": "1",
        }
    )


def test_bad_events_are_dropped_or_poisoned_and_good_ones_still_served(bench):
    container = bench.settings.reports_container
    good = bench.write_report(real_report("francecentral"))
    bench.reports.create("Public/x/broken.json", b'{"schema": "servicetags.change-report/v1"}')
    subject = f"/blobServices/default/containers/{container}/blobs/"
    url = f"{bench.reports.url}/"
    no_data = json.loads(_event(subject + "a.json", url + "a.json"))
    del no_data["data"]
    bad = {
        "not json": ("{{{", "poison"),
        "array": (json.dumps([json.loads(_event(subject + good, url + good))]), "poison"),
        "wrong type": (
            _event(subject + good, url + good, event_type="Microsoft.Storage.BlobDeleted"),
            "drop",
        ),
        "other container": (
            _event(
                "/blobServices/default/containers/other/blobs/a.json",
                "http://127.0.0.1/devstoreaccount1/other/a.json",
            ),
            "drop",
        ),
        "missing data": (json.dumps(no_data), "poison"),
        "blob gone": (_event(subject + "Public/x/gone.json", url + "Public/x/gone.json"), "poison"),
        "fails schema": (_event(subject + "Public/x/broken.json", url + "Public/x/broken.json"), "poison"),
    }
    for content, _ in bad.values():
        bench.queue.send(base64.b64encode(content.encode()).decode())
    bench.relay().poll_once()  # the good report's event (and the broken blob's) behind the bad ones
    stats = bench.notify()
    poisoned = {p["content"]: p["reason"] for p in bench.poisoned()}
    for name, (content, fate) in bad.items():
        encoded = base64.b64encode(content.encode()).decode()
        assert (encoded in poisoned) == (fate == "poison"), name
    reasons = " | ".join(poisoned.values())
    assert "is gone" in reasons and "not a valid change report" in reasons
    network = by_recipient(bench.emails())["network@example.com"]
    assert [m["X-Servicetags-Report"].strip() for m in network] == [good]
    assert stats.poisoned >= 5


# Azurite only: it waits out a 3 s outage of the mail server; once is enough (the retries are
# the queue loop's, which the memory variants of the tests below go through too).
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_mail_server_down_for_a_while_then_every_email_arrives_once(bench):
    bench.write_report(real_report("francecentral"))
    bench.write_report(real_report("global"))
    bench.relay().poll_once()
    bench.sink.stop()
    restart = threading.Timer(3.0, bench.sink.start)
    restart.start()
    try:
        stats = bench.notify(SERVICETAGS_RETRY_DELAY="1", SERVICETAGS_MAX_TRIES="20")
    finally:
        restart.join()
    assert stats.poisoned == 0 and stats.retried >= 1
    mails = by_recipient(bench.emails())
    assert len(mails["network@example.com"]) == 2 and len(mails["storage@example.com"]) == 1


def test_mail_server_down_past_max_tries_poisons_then_requeue_delivers(bench):
    from runtime.poison_queues import requeue

    bench.write_report(real_report("francecentral"))
    bench.relay().poll_once()
    bench.sink.stop()
    stats = bench.notify()
    assert stats.poisoned == 1
    [record] = bench.poisoned()
    assert "failed 3 times" in record["reason"] and "not sent" in record["reason"]
    bench.sink.start()
    assert requeue(bench.poison, bench.queue) == 1
    assert bench.notify().processed == 1
    assert len(bench.emails()) == 1


# Azurite only: notifier processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_crash_after_sending_resends_with_the_same_message_id(bench):
    """The one crash window left, on the side that loses nothing: a duplicate, recognisable."""
    bench.write_report(real_report("francecentral"))
    bench.relay().poll_once()
    env = {
        **os.environ,
        **bench.env,
        "SERVICETAGS_RECIPIENTS": json.dumps(RECIPIENTS[:1]),
        "SERVICETAGS_CRASH_AT": "after_send",
        "SERVICETAGS_VISIBILITY_TIMEOUT": "2",
    }
    victim = subprocess.run(
        [sys.executable, "-m", "notifier", "--until-empty"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert victim.returncode == -9, victim.stderr
    assert len(bench.emails()) == 1
    bench.notify(SERVICETAGS_RECIPIENTS=json.dumps(RECIPIENTS[:1]), SERVICETAGS_CLAIM_TIMEOUT="1")
    first, again = bench.emails()
    assert first["Message-ID"] == again["Message-ID"]
    bench.notify(SERVICETAGS_RECIPIENTS=json.dumps(RECIPIENTS[:1]))
    assert len(bench.emails()) == 2  # marked sent now: no third


def test_acs_backend_sends_through_the_real_email_client(bench, tmp_path):
    from azure.core.credentials import AzureKeyCredential

    from devstack.acs_fake import AcsFake
    from notifier.delivery import Notifier
    from notifier.mail import acs_sender_from
    from notifier.recipients import parse_recipients

    name = bench.write_report(real_report("francecentral"))
    with AcsFake(tmp_path / "acs") as fake:
        sender = acs_sender_from(
            endpoint=fake.url,
            credential=AzureKeyCredential(fake.access_key),
            polling_interval=0.05,
            retry_backoff_factor=0.01,
        )
        notifier = Notifier(
            reports=bench.reports,
            markers=bench.clients.container(bench.env["SERVICETAGS_NOTIFICATIONS_CONTAINER"]),
            sender=sender,
            mail_from="DoNotReply@example.azurecomm.net",
            recipients=parse_recipients(json.dumps(RECIPIENTS)),
        )
        fake.fail_next(1, status=429)
        delivered = notifier.deliver(name, bench.reports.blob_url(name))
        assert delivered.sent == ("network@example.com",)
        assert delivered.skipped == ("storage@example.com", "tokyo@example.com")
        assert notifier.deliver(name).already == ("network@example.com",)
        [message] = fake.messages
        assert message["recipients"]["to"][0]["address"] == "network@example.com"
        assert "francecentral" in message["content"]["subject"]
        assert "20.95.113.0/24" in message["content"]["plainText"]
        [attachment] = message["attachments"]
        assert json.loads(base64.b64decode(attachment["contentInBase64"])) == real_report("francecentral")


# Azurite only: notifier processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_webhook_mode_end_to_end_with_the_relay_posting_events(bench):
    import urllib.request

    from devstack.relay import webhook_deliverer
    from devstack.tcp_ports import free_port

    port = free_port()
    env = {
        **os.environ,
        **bench.env,
        "SERVICETAGS_WEBHOOK_HOST": "127.0.0.1",
        "SERVICETAGS_WEBHOOK_PORT": str(port),
        "SERVICETAGS_WEBHOOK_SECRET": "s3cret-for-tests-only-0123",
        "SERVICETAGS_RECIPIENTS": json.dumps(RECIPIENTS[:1]),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "notifier", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/events"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b"[]"), timeout=1)
            except urllib.error.HTTPError as exc:
                assert exc.code == 401  # up, and refusing calls without the secret
                break
            except OSError:
                time.sleep(0.2)
        bench.write_report(real_report("francecentral"))
        relay = BlobEventRelay(
            bench.reports.client,
            account_name="devstoreaccount1",
            container=bench.settings.reports_container,
            state_path=None,
            deliver=webhook_deliverer(f"{url}?code=s3cret-for-tests-only-0123"),
        )
        assert relay.poll_once() == 1
        [mail] = bench.emails()
        assert mail["X-Servicetags-Region"] == "francecentral"
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert server.returncode == 0


# Azurite only: notifier processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_a_notifier_killed_between_claim_and_send_loses_no_email(bench):
    """Issue 16 item 2. The claim outlives this event's whole retry window (3 tries, 1 s
    visibility, no delay: about 2 s; the claim: 6 s). Before the fix every later delivery saw
    "another notifier is sending" and the event was poisoned with nothing sent."""
    name = bench.write_report(real_report("francecentral"))
    bench.relay().poll_once()
    one = {
        "SERVICETAGS_RECIPIENTS": json.dumps(RECIPIENTS[:1]),
        "SERVICETAGS_CLAIM_TIMEOUT": "6",
        "SERVICETAGS_VISIBILITY_TIMEOUT": "1",
        "SERVICETAGS_MAX_TRIES": "3",
    }
    env = {**os.environ, **bench.env, **one, "SERVICETAGS_CRASH_AT": "before_send"}
    victim = subprocess.run(
        [sys.executable, "-m", "notifier", "--until-empty"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert victim.returncode == -9, victim.stderr
    assert bench.emails() == []  # claimed, never sent
    started = time.monotonic()
    stats = bench.notify(**one)
    assert stats.poisoned == 0 and stats.processed == 1, stats
    [mail] = bench.emails()
    assert mail["X-Servicetags-Report"].strip() == name
    assert time.monotonic() - started < 20  # waited out the 6 s claim, no longer


def test_a_forged_event_plants_no_link_and_does_not_suppress_the_genuine_one(bench):
    """Issue 16 item 3: the event's data.url is checked, never used. A forged event for a real
    report (another account's URL) comes first: it is poisoned as forged, the genuine event
    after it is delivered, and every link is the configured container's."""
    name = bench.write_report(real_report("francecentral"))
    container = bench.settings.reports_container
    subject = f"/blobServices/default/containers/{container}/blobs/{name}"
    forged = {
        "other account": f"https://attacker.blob.core.windows.net/{container}/{name}",
        "other container": f"{bench.reports.url.rsplit('/', 1)[0]}/elsewhere/{name}",
        "other blob": f"{bench.reports.url}/Public/x/other.json",
        "with a query": f"{bench.reports.blob_url(name)}?redirect=https://attacker.example",
    }
    for url in forged.values():
        bench.queue.send(_event(subject, url))
    bench.relay().poll_once()  # the genuine event, behind the forged ones
    stats = bench.notify(SERVICETAGS_RECIPIENTS=json.dumps(RECIPIENTS[:1]))
    assert stats.poisoned == len(forged) and stats.processed == 1
    reasons = [p["reason"] for p in bench.poisoned()]
    assert all("refused as forged" in r for r in reasons) and len(reasons) == len(forged)
    [mail] = bench.emails()
    text = body_text(mail)
    assert f"Stored report: {bench.reports.blob_url(name)}" in text
    assert "attacker" not in mail.as_string() and "elsewhere" not in mail.as_string()
