"""notifier.events against real recorded payloads (tests/samples) and each kind of bad input."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.errors import BadMessage
from notifier.events import (
    IgnoredEvent,
    NotAReportEvent,
    ReportEvent,
    SubscriptionValidation,
    parse_event,
    parse_queue_message,
    parse_webhook_body,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def one(name: str) -> dict[str, Any]:
    """The single event of a sample (the docs print webhook arrays)."""
    doc = sample(name)
    return doc[0] if isinstance(doc, list) else doc


EVENTGRID = one("eventgrid-blobcreated.docs.json")
CLOUDEVENT = one("cloudevents-blobcreated.docs.json")
SDK_EVENTGRID = one("eventgrid-blobcreated.sdk-python.json")


def b64(doc: Any) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


# --- recorded samples parse -------------------------------------------------------------


@pytest.mark.parametrize("encode", [json.dumps, b64], ids=["plain", "base64"])
def test_recorded_eventgrid_sample_parses_from_a_queue_message(encode):
    event = parse_queue_message(encode(EVENTGRID), expected_container="test-container")

    assert event == ReportEvent(
        id="831e1650-001e-001b-66ab-eeb76e069631",
        event_type="Microsoft.Storage.BlobCreated",
        subject="/blobServices/default/containers/test-container/blobs/new-file.txt",
        container="test-container",
        blob_name="new-file.txt",
        url="https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt",
        etag="0x8D4BCC2E4835CD0",
        sequencer="00000000000004420000000000028963",
        event_time=datetime(2017, 6, 26, 18, 41, 0, 958410, tzinfo=UTC),
        schema="eventgrid",
    )


@pytest.mark.parametrize("encode", [json.dumps, b64], ids=["plain", "base64"])
def test_recorded_cloudevent_sample_parses_from_a_queue_message(encode):
    event = parse_queue_message(encode(CLOUDEVENT), expected_container="test-container")

    assert event.schema == "cloudevents"
    assert event.id == "831e1650-001e-001b-66ab-eeb76e069631"
    assert event.blob_name == "new-file.txt"
    assert event.etag == "0x8D4BCC2E4835CD0"
    assert event.event_time == datetime(2017, 6, 26, 18, 41, 0, 958410, tzinfo=UTC)


def test_recorded_sdk_sample_with_unquoted_etag_parses_from_bytes():
    event = parse_queue_message(
        json.dumps(SDK_EVENTGRID).encode(), expected_container="oc2d2817345i200097container"
    )

    assert event.blob_name == "oc2d2817345i20002296blob"
    assert event.etag == "0x8D4BCC2E4835CD0"


def test_blob_names_with_slashes_keep_their_path():
    doc = copy.deepcopy(EVENTGRID)
    doc["subject"] = "/blobServices/default/containers/reports/blobs/francecentral/370-371/report.json"

    assert parse_event(doc).blob_name == "francecentral/370-371/report.json"


# --- bad input: BadMessage (poison) ------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("this is not json", "neither JSON nor base64"),
        ("{not json", "not valid JSON"),
        (json.dumps([EVENTGRID]), "JSON array"),
        (b64([EVENTGRID]), "JSON array"),
    ],
    ids=["text", "broken-json", "array", "base64-array"],
)
def test_malformed_queue_messages_are_bad_messages(content, problem):
    with pytest.raises(BadMessage, match=problem):
        parse_queue_message(content)


def _without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc


@pytest.mark.parametrize("base", [EVENTGRID, CLOUDEVENT], ids=["eventgrid", "cloudevents"])
@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (("data",), "no data object"),
        (("data", "url"), "no data.url"),
        (("subject",), "no subject"),
        (("id",), "no 'id'"),
    ],
    ids=["data", "url", "subject", "id"],
)
def test_events_missing_a_required_part_are_bad_messages(base, path, problem):
    doc = _without(base, *path)
    doc["subject"] = doc.get("subject") and doc["subject"].replace("test-container", "reports")

    with pytest.raises(BadMessage, match=problem):
        parse_queue_message(json.dumps(doc))


def test_an_unparseable_event_time_is_a_bad_message():
    doc = copy.deepcopy(EVENTGRID)
    doc["eventTime"] = "yesterday"

    with pytest.raises(BadMessage, match="not a valid eventgrid event"):
        parse_event(doc, expected_container="test-container")


def test_a_subject_that_is_not_a_blob_path_is_a_bad_message():
    doc = copy.deepcopy(EVENTGRID)
    doc["subject"] = "/containers/reports/new-file.txt"

    with pytest.raises(BadMessage, match="is not /blobServices/default/containers"):
        parse_event(doc)


def test_a_url_that_is_not_http_is_a_bad_message():
    doc = copy.deepcopy(EVENTGRID)
    doc["data"]["url"] = "file:///etc/passwd"

    with pytest.raises(BadMessage, match="not an http"):
        parse_event(doc, expected_container="test-container")


# --- valid but not for us: NotAReportEvent (drop) ------------------------------------------


def test_recorded_blob_deleted_event_is_not_a_report_event():
    with pytest.raises(NotAReportEvent, match=r"Microsoft\.Storage\.BlobDeleted"):
        parse_queue_message(
            json.dumps(one("eventgrid-blobdeleted.docs.json")), expected_container="testcontainer"
        )


def test_an_event_from_another_container_is_not_a_report_event():
    with pytest.raises(NotAReportEvent, match="'test-container', not 'reports'"):
        parse_queue_message(json.dumps(EVENTGRID), expected_container="reports")


def test_a_directory_subject_is_not_a_report_event():
    doc = copy.deepcopy(CLOUDEVENT)
    doc["subject"] = "/blobServices/default/containers/reports/blobs/francecentral/"

    with pytest.raises(NotAReportEvent, match="directory"):
        parse_event(doc)


def test_a_data_lake_create_file_event_waits_for_its_flush():
    doc = copy.deepcopy(EVENTGRID)
    doc["data"]["api"] = "CreateFile"

    with pytest.raises(NotAReportEvent, match="CreateFile"):
        parse_event(doc, expected_container="test-container")


def test_a_validation_event_in_a_queue_is_not_a_report_event():
    with pytest.raises(NotAReportEvent, match="subscription validation"):
        parse_event(one("eventgrid-subscription-validation.sdk-net.json"))


# --- webhook bodies ---------------------------------------------------------------------


def test_webhook_eventgrid_array_yields_report_and_ignored_items():
    body = json.dumps([EVENTGRID, one("eventgrid-blobdeleted.docs.json")]).encode()

    items = parse_webhook_body(body, "application/json", expected_container="test-container")

    assert isinstance(items[0], ReportEvent)
    assert items[0].blob_name == "new-file.txt"
    assert isinstance(items[1], IgnoredEvent)
    assert items[1].event_type == "Microsoft.Storage.BlobDeleted"


def test_webhook_recorded_validation_event_yields_its_code():
    body = (SAMPLES / "eventgrid-subscription-validation.sdk-net.json").read_bytes()

    (item,) = parse_webhook_body(body, "application/json")

    assert item == SubscriptionValidation(
        "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
        one("eventgrid-subscription-validation.sdk-net.json")["data"]["validationUrl"],
    )


def test_webhook_single_cloudevent_and_batch():
    single = parse_webhook_body(
        json.dumps(CLOUDEVENT).encode(),
        "application/cloudevents+json; charset=utf-8",
        expected_container="test-container",
    )
    batch = parse_webhook_body(
        json.dumps([CLOUDEVENT, CLOUDEVENT]).encode(),
        "application/cloudevents-batch+json; charset=utf-8",
        expected_container="test-container",
    )

    assert [item.schema for item in single] == ["cloudevents"]  # type: ignore[union-attr]
    assert len(batch) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        (b"{nope", "application/json", "not valid JSON"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
        (b"[]", "application/json", "empty array"),
        (json.dumps([CLOUDEVENT]).encode(), "application/cloudevents+json", "one JSON object"),
        (json.dumps(CLOUDEVENT).encode(), "application/cloudevents-batch+json", "JSON array"),
        (json.dumps([EVENTGRID, {"id": "x"}]).encode(), "application/json", "no 'eventType'"),
        (json.dumps([42]).encode(), "application/json", "JSON object, not a number"),
    ],
    ids=["json", "utf8", "empty", "ce-array", "ce-batch-object", "one-bad-in-batch", "number"],
)
def test_webhook_malformed_bodies_are_bad_messages(body, content_type, problem):
    with pytest.raises(BadMessage, match=problem):
        parse_webhook_body(body, content_type, expected_container="test-container")


@pytest.mark.parametrize("api", [["CreateFile"], {"a": 1}, 7, None])
def test_an_api_field_of_any_json_type_is_no_crash(api):
    """Found by bench/fuzz.py: a list as data.api raised TypeError (unhashable) in a set test."""
    doc = {**EVENTGRID, "data": {**EVENTGRID["data"], "api": api}}
    event = parse_event(doc, expected_container="test-container")
    assert event.blob_name == EVENTGRID["subject"].rsplit("/blobs/", 1)[1]
