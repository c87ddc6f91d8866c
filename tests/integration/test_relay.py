"""The blob-event relay against a real Azurite, compared key for key with recorded Event Grid
payloads (tests/samples)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobClient, ContentSettings
from azure.storage.queue import QueueClient

from devstack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from devstack.relay import (
    BlobEventRelay,
    RelayStateError,
    WebhookDeliveryError,
    queue_deliverer,
    webhook_deliverer,
)
from notifier.events import parse_queue_message, parse_webhook_body
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.integration

SAMPLES = ROOT / "tests" / "samples"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Formats both the recorded samples and the relay's events must have.
FORMATS = {
    ("id",): UUID,
    ("subject",): r"/blobServices/default/containers/[^/]+/blobs/.+",
    ("data", "api"): r"PutBlob|PutBlockList",
    ("data", "clientRequestId"): UUID,
    ("data", "requestId"): UUID[:-7] + r"[0-9a-f]{6}000000",
    ("data", "eTag"): r'"?0x[0-9A-F]{15,16}"?',
    ("data", "blobType"): r"BlockBlob",
    ("data", "url"): r"https?://[^/]+/.+",
    ("data", "sequencer"): r"[0-9A-F]{32}",
    ("data", "storageDiagnostics", "batchId"): UUID,
}
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z"
ACCOUNT_ID = r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[^/]+"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))[0]


def shape(value: Any) -> Any:
    """Keys (in order) and value types, recursively."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    return type(value).__name__


def assert_formats(event: dict[str, Any]) -> None:
    for path, pattern in FORMATS.items():
        value: Any = event
        for key in path:
            value = value[key]
        assert re.fullmatch(pattern, value), f"{'.'.join(path)}={value!r} does not match {pattern}"
    assert re.fullmatch(TIME, event.get("eventTime") or event["time"])
    assert re.fullmatch(ACCOUNT_ID, event.get("topic") or event["source"])


def assert_like_recorded(event: dict[str, Any], sample_name: str) -> None:
    sample = recorded(sample_name)
    assert shape(event) == shape(sample)
    assert_formats(sample)  # the patterns describe the real thing...
    assert_formats(event)  # ...and the relay's output


def upload(container: Any, name: str, data: bytes = b'{"schema": "x"}') -> dict[str, Any]:
    container.upload_blob(
        name, data, overwrite=True, content_settings=ContentSettings(content_type="application/json")
    )
    return container.get_blob_client(name).get_blob_properties()


def received(queue: Any) -> list[str]:
    return [message.content for message in queue.peek_messages(max_messages=32)]


def decoded(content: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(content, validate=True))


def relay_for(container: Any, deliver: Any, state: Path | None, **kw: Any) -> BlobEventRelay:
    return BlobEventRelay(
        container,
        account_name=ACCOUNT_NAME,
        container=container.container_name,
        deliver=deliver,
        state_path=state,
        **kw,
    )


# --- queue delivery ----------------------------------------------------------------------


def test_each_blob_becomes_one_base64_event_shaped_like_event_grids(storage, azurite, tmp_path):
    container, queue = storage.container("reports"), storage.queue("events")
    first = upload(container, "francecentral/370-371.json", b'{"a": 1}')
    second = upload(container, "global/12-13.json", b'{"bb": 22}')
    relay = relay_for(container, queue_deliverer(queue), tmp_path / "state.json")

    assert relay.poll_once() == 2

    contents = received(queue)
    assert len(contents) == 2
    events = {decoded(content)["data"]["url"]: decoded(content) for content in contents}
    for props, size in ((first, len(b'{"a": 1}')), (second, len(b'{"bb": 22}'))):
        url = f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT_NAME}/{container.container_name}/{props.name}"
        event = events[url]
        assert_like_recorded(event, "eventgrid-blobcreated.docs.json")
        subject = f"/blobServices/default/containers/{container.container_name}/blobs/{props.name}"
        assert event["subject"] == subject
        assert event["topic"].endswith(f"/storageAccounts/{ACCOUNT_NAME}")
        assert event["eventType"] == "Microsoft.Storage.BlobCreated"
        assert event["data"]["eTag"] == props.etag.strip('"')
        assert event["data"]["contentType"] == "application/json"
        assert event["data"]["contentLength"] == size
        # The notifier can read the report through the URL in the event.
        key = {"account_name": ACCOUNT_NAME, "account_key": ACCOUNT_KEY}
        blob = BlobClient.from_blob_url(url, credential=key)
        assert blob.download_blob().readall() == container.download_blob(props.name).readall()
    sequencers = sorted(event["data"]["sequencer"] for event in events.values())
    assert sequencers == ["0" * 31 + "1", "0" * 31 + "2"]

    parsed = parse_queue_message(contents[0], expected_container=container.container_name)
    assert parsed.schema == "eventgrid"
    assert parsed.blob_name in {"francecentral/370-371.json", "global/12-13.json"}


def test_the_runs_relay_raises_events_for_complete_markers_only_without_listing_outcomes(storage):
    from devstack.runs_relay import RunMarkers

    container, queue = storage.container("runs"), storage.queue("events")
    for run in ("Public/weekly-1", "Public/weekly-2", "AzureChinaCloud/weekly-1"):
        upload(container, f"{run}/manifest.json")
        for region in ("francecentral", "japaneast"):
            upload(container, f"{run}/regions/{region}.json")
    upload(container, "Public/weekly-1/complete.json")
    upload(container, "AzureChinaCloud/weekly-1/complete.json")
    upload(container, "Public/weekly-2/complete.json.tmp")  # not the marker
    markers = RunMarkers(container)
    relay = relay_for(markers, queue_deliverer(queue), None)

    assert relay.poll_once() == 2
    assert sorted(decoded(c)["subject"].rsplit("/blobs/", 1)[1] for c in received(queue)) == [
        "AzureChinaCloud/weekly-1/complete.json",
        "Public/weekly-1/complete.json",
    ]
    assert relay.poll_once() == 0
    upload(container, "Public/weekly-2/complete.json")  # the last region of weekly-2 checked
    assert relay.poll_once() == 1
    assert decoded(received(queue)[-1])["subject"].endswith("/blobs/Public/weekly-2/complete.json")
    # A run that is gone (retention) is forgotten, as the relay forgets blobs that are gone.
    for name in [n for n in container.list_blob_names() if n.startswith("AzureChinaCloud/")]:
        container.delete_blob(name)
    assert sorted(b.name for b in markers.list_blobs()) == [
        "Public/weekly-1/complete.json",
        "Public/weekly-2/complete.json",
    ]
    assert relay.poll_once() == 0 and len(received(queue)) == 3


def test_a_second_poll_delivers_nothing(storage, tmp_path):
    container, queue = storage.container("reports"), storage.queue("events")
    upload(container, "a.json")
    relay = relay_for(container, queue_deliverer(queue), tmp_path / "state.json")
    relay.poll_once()

    assert relay.poll_once() == 0
    assert len(received(queue)) == 1


def test_after_a_restart_only_new_or_replaced_blobs_are_delivered(storage, tmp_path):
    container, queue = storage.container("reports"), storage.queue("events")
    state = tmp_path / "relay" / "state.json"
    upload(container, "old.json")
    upload(container, "replaced.json", b"1")
    relay_for(container, queue_deliverer(queue), state).poll_once()

    restarted = relay_for(container, queue_deliverer(queue), state)
    assert restarted.poll_once() == 0
    upload(container, "new.json")
    upload(container, "replaced.json", b"22")  # a new etag: Event Grid raises BlobCreated again
    assert restarted.poll_once() == 2

    events = [decoded(content) for content in received(queue)]
    names = [event["subject"].rsplit("/", 1)[1] for event in events]
    assert sorted(names) == ["new.json", "old.json", "replaced.json", "replaced.json"]
    # The sequencer survives the restart: later events sort after earlier ones.
    assert [e["data"]["sequencer"] for e in events] == sorted(e["data"]["sequencer"] for e in events)
    assert len({e["data"]["sequencer"] for e in events}) == 4


def test_a_failed_delivery_is_retried_with_the_same_event(storage, tmp_path):
    container = storage.container("reports")
    upload(container, "a.json")
    sent: list[str] = []
    fail = [True]

    def flaky(text: str) -> None:
        if fail.pop() if fail else False:
            raise ConnectionError("queue unreachable")
        sent.append(text)

    relay = relay_for(container, flaky, tmp_path / "state.json")
    with pytest.raises(ConnectionError):
        relay.poll_once()
    assert not (tmp_path / "state.json").exists() or "a.json" not in (tmp_path / "state.json").read_text()

    assert relay.poll_once() == 1
    assert relay.poll_once() == 0
    assert len(sent) == 1


def test_plain_text_encoding_sends_the_json_itself(storage, tmp_path):
    container, queue = storage.container("reports"), storage.queue("events")
    upload(container, "a.json")

    relay_for(container, queue_deliverer(queue, encoding="text"), None).poll_once()

    (content,) = received(queue)
    assert json.loads(content)["data"]["api"] == "PutBlob"


def test_cloudevents_schema_matches_the_recorded_cloudevent(storage, tmp_path):
    container, queue = storage.container("reports"), storage.queue("events")
    upload(container, "a.json")

    relay_for(container, queue_deliverer(queue), tmp_path / "s.json", schema="cloudevents").poll_once()

    (content,) = received(queue)
    event = decoded(content)
    assert_like_recorded(event, "cloudevents-blobcreated.docs.json")
    assert event["type"] == "Microsoft.Storage.BlobCreated"
    assert event["specversion"] == "1.0"
    parsed = parse_queue_message(content, expected_container=container.container_name)
    assert (parsed.schema, parsed.blob_name) == ("cloudevents", "a.json")


def test_a_relay_for_another_container_name_is_refused(storage):
    container = storage.container("reports")

    with pytest.raises(ValueError, match="not the client's container"):
        BlobEventRelay(
            container, account_name=ACCOUNT_NAME, container="reports", deliver=print, state_path=None
        )


def test_a_corrupt_state_file_is_a_clear_error(storage, tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{half")

    with pytest.raises(RelayStateError, match="delete it"):
        relay_for(storage.container("reports"), print, state)


# --- webhook delivery --------------------------------------------------------------------


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.requests: list[tuple[str, Any, bytes]] = []
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/events?code=s3cret"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, self.headers, body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_webhook_delivery_posts_a_one_element_array(storage, recorder, tmp_path):
    container = storage.container("reports")
    upload(container, "a.json")
    relay = relay_for(container, webhook_deliverer(recorder.url, {"x-servicetags-key": "k"}), None)

    assert relay.poll_once() == 1

    ((path, headers, body),) = recorder.requests
    assert path == "/api/events?code=s3cret"
    assert headers["aeg-event-type"] == "Notification"
    assert headers["Content-Type"].startswith("application/json")
    assert headers["x-servicetags-key"] == "k"
    events = json.loads(body)
    assert isinstance(events, list) and len(events) == 1
    assert_like_recorded(events[0], "eventgrid-blobcreated.docs.json")
    (item,) = parse_webhook_body(body, headers["Content-Type"], expected_container=container.container_name)
    assert item.blob_name == "a.json"  # type: ignore[union-attr]


def test_webhook_delivery_of_a_cloudevent_posts_it_alone(storage, recorder):
    container = storage.container("reports")
    upload(container, "a.json")

    relay_for(container, webhook_deliverer(recorder.url), None, schema="cloudevents").poll_once()

    ((_, headers, body),) = recorder.requests
    assert headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert_like_recorded(json.loads(body), "cloudevents-blobcreated.docs.json")


def test_a_refusing_webhook_gets_the_event_again_next_poll(storage, recorder):
    container = storage.container("reports")
    upload(container, "a.json")
    recorder.status = 503
    relay = relay_for(container, webhook_deliverer(recorder.url), None)

    with pytest.raises(WebhookDeliveryError, match="answered 503") as refused:
        relay.poll_once()
    assert "s3cret" not in str(refused.value)  # the secret in the query is never shown

    recorder.status = 200
    assert relay.poll_once() == 1
    first, second = (json.loads(body)[0] for _, _, body in recorder.requests)
    assert first["id"] == second["id"]


# --- as a process ------------------------------------------------------------------------


def test_the_relay_process_delivers_to_a_queue_it_creates_and_stops_on_sigterm(storage, azurite, tmp_path):
    container = storage.container("reports")
    queue_name = f"events-{os.getpid()}-{time.monotonic_ns() % 100000}"
    env = {**os.environ, "SERVICETAGS_LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.relay",
            "--connection-string",
            azurite.connection_string,
            "--container",
            container.container_name,
            "--queue",
            queue_name,
            "--state-dir",
            str(tmp_path),
            "--interval",
            "0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_until((tmp_path / "relay.json").exists, timeout=20)
        upload(container, "a.json")
        with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
            assert wait_until(lambda: len(received(queue)) == 1, timeout=10)
            assert decoded(received(queue)[0])["subject"].endswith("/blobs/a.json")
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=10)
            queue.delete_queue()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert not (tmp_path / "relay.json").exists()
    records = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    assert [r for r in records if r["event"] == "event_relayed" and r["blob"] == "a.json"]
