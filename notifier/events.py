"""Incoming `Microsoft.Storage.BlobCreated` events, in either schema, parsed. No I/O.

Two kinds of failure, decided by type (the notifier never looks at message text):
- `BadMessage` (from core.messages): the input is malformed (not JSON, an array where
  Event Grid puts one object, no `data`, no `subject` or `url`). Queue input poisons it,
  the webhook answers 400.
- `NotAReportEvent`: a well-formed event that is not a new report blob (another event
  type, another container, a directory). Logged, counted and dropped.

Event Grid puts one event object per queue message, and POSTs an array (Event Grid schema)
or a single CloudEvent / a CloudEvents batch to a webhook.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, SystemEventNames

from core.errors import BadMessage
from core.json_input import JsonInputError, load_json
from core.messages import decode_json_message

BLOB_CREATED = str(SystemEventNames.StorageBlobCreatedEventName.value)
SUBSCRIPTION_VALIDATION = str(SystemEventNames.EventGridSubscriptionValidationEventName.value)
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
CLOUDEVENTS_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
# What Event Grid sends: its own schema as application/json, CloudEvents in structured mode.
CONTENT_TYPES = ("application/json", CLOUDEVENTS_CONTENT_TYPE, CLOUDEVENTS_BATCH_CONTENT_TYPE)

Schema = Literal["eventgrid", "cloudevents"]

_SUBJECT = re.compile(r"^/blobServices/default/containers/(?P<container>[^/]+)/blobs/(?P<name>.+)$")
# HNS accounts raise BlobCreated for CreateFile before any data is flushed; the
# FlushWithClose event that follows is the one that means "complete".
_UNCOMMITTED_APIS = frozenset({"CreateFile"})


class UnsupportedMediaType(BadMessage):
    """A webhook body in a content type Event Grid does not send (415)."""


class NotAReportEvent(Exception):
    """A valid event that is not about a new report blob: log, count and drop it."""


class ReportEvent(NamedTuple):
    id: str
    event_type: str
    subject: str
    container: str
    blob_name: str
    url: str
    etag: str  # without the quotes some producers put around it
    sequencer: str
    event_time: datetime | None
    schema: Schema


class SubscriptionValidation(NamedTuple):
    """Event Grid's webhook handshake: answer with `code` to prove we own the endpoint."""

    id: str
    code: str
    url: str


class IgnoredEvent(NamedTuple):
    """An event in a webhook body that is valid but not for us, and why."""

    id: str
    event_type: str
    subject: str
    reason: str


WebhookItem = ReportEvent | SubscriptionValidation | IgnoredEvent


def parse_queue_message(content: str | bytes, *, expected_container: str = "reports") -> ReportEvent:
    """One queue message (plain or base64 JSON, one event object, either schema)."""
    doc = decode_json_message(content)
    if isinstance(doc, list):
        raise BadMessage("message is a JSON array; Event Grid puts one event object per queue message")
    return parse_event(doc, expected_container=expected_container)


def parse_event(doc: Any, *, expected_container: str = "reports") -> ReportEvent:
    """One decoded event (a dict) in Event Grid or CloudEvents schema."""
    envelope = _envelope(doc)
    if envelope.event_type == SUBSCRIPTION_VALIDATION:
        raise NotAReportEvent(f"event {envelope.id} is a subscription validation, not a blob event")
    return _report(envelope, expected_container)


def parse_webhook_body(
    body: bytes, content_type: str, *, expected_container: str = "reports"
) -> list[WebhookItem]:
    """All events in a webhook POST. Any malformed event makes the whole body BadMessage, so
    nothing is handled from a body the caller will be told to fix."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"content type {content_type[:100]!r} is not one of {', '.join(CONTENT_TYPES)}"
        )
    try:
        doc = load_json(body)
    except JsonInputError as exc:
        raise BadMessage(f"body {exc}") from None
    if media_type == CLOUDEVENTS_CONTENT_TYPE and not isinstance(doc, dict):
        raise BadMessage(f"{CLOUDEVENTS_CONTENT_TYPE} body must be one JSON object")
    if media_type == CLOUDEVENTS_BATCH_CONTENT_TYPE and not isinstance(doc, list):
        raise BadMessage(f"{CLOUDEVENTS_BATCH_CONTENT_TYPE} body must be a JSON array")
    events = doc if isinstance(doc, list) else [doc]
    if not events:
        raise BadMessage("body is an empty array: no events")
    return [_webhook_item(event, expected_container) for event in events]


def _webhook_item(doc: Any, expected_container: str) -> WebhookItem:
    envelope = _envelope(doc)
    if envelope.event_type == SUBSCRIPTION_VALIDATION:
        code = envelope.data.get("validationCode")
        if not isinstance(code, str) or not code:
            raise BadMessage(f"validation event {envelope.id} has no validationCode")
        return SubscriptionValidation(envelope.id, code, str(envelope.data.get("validationUrl") or ""))
    try:
        return _report(envelope, expected_container)
    except NotAReportEvent as exc:
        return IgnoredEvent(envelope.id, envelope.event_type, envelope.subject, str(exc))


class _Envelope(NamedTuple):
    id: str
    event_type: str
    subject: str
    data: dict[str, Any]
    event_time: datetime | None
    schema: Schema


def _envelope(doc: Any) -> _Envelope:
    """The schema-independent parts, through the Azure SDK's own models."""
    if not isinstance(doc, dict):
        raise BadMessage(f"event must be a JSON object, not {_json_type(doc)}")
    schema: Schema = "cloudevents" if "specversion" in doc else "eventgrid"
    id_key, type_key = ("id", "type") if schema == "cloudevents" else ("id", "eventType")
    # Checked on the raw dict: the SDK invents an id for a CloudEvent without one, and a
    # made-up id would defeat de-duplication downstream.
    for key in (id_key, type_key):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise BadMessage(f"event has no {key!r} string ({schema} schema)")
    try:
        if schema == "cloudevents":
            cloud: CloudEvent[Any] = CloudEvent.from_dict(doc)
            event_type, subject, data, time = cloud.type, cloud.subject, cloud.data, cloud.time
        else:
            grid = EventGridEvent.from_dict(doc)
            event_type, subject, data, time = grid.event_type, grid.subject, grid.data, grid.event_time
    except Exception as exc:  # the SDKs raise ValueError, KeyError or DeserializationError
        raise BadMessage(f"event {doc[id_key]} is not a valid {schema} event: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"event {doc[id_key]} has no data object")
    return _Envelope(
        id=doc[id_key],
        event_type=str(event_type),
        subject=subject if isinstance(subject, str) else "",
        data=data,
        event_time=time.astimezone(UTC) if isinstance(time, datetime) else None,
        schema=schema,
    )


def _report(envelope: _Envelope, expected_container: str) -> ReportEvent:
    if envelope.event_type != BLOB_CREATED:
        raise NotAReportEvent(f"event type {envelope.event_type!r} is not {BLOB_CREATED}")
    if not envelope.subject:
        raise BadMessage(f"event {envelope.id} has no subject")
    match = _SUBJECT.match(envelope.subject)
    if match is None:
        raise BadMessage(
            f"event {envelope.id} subject {envelope.subject!r} is not "
            "/blobServices/default/containers/<container>/blobs/<name>"
        )
    container, name = match["container"], match["name"]
    if container != expected_container:
        raise NotAReportEvent(f"blob {name!r} is in container {container!r}, not {expected_container!r}")
    if name.endswith("/"):
        raise NotAReportEvent(f"subject {envelope.subject!r} is a directory, not a report blob")
    data = envelope.data
    api = data.get("api")
    if isinstance(api, str) and api in _UNCOMMITTED_APIS:  # any JSON value may come: a list is unhashable
        raise NotAReportEvent(f"api {api!r} creates the blob before its data is committed")
    url = data.get("url")
    if not isinstance(url, str) or not url:
        raise BadMessage(f"event {envelope.id} has no data.url")
    if urlsplit(url).scheme not in ("http", "https"):
        raise BadMessage(f"event {envelope.id} data.url {url!r} is not an http(s) URL")
    return ReportEvent(
        id=envelope.id,
        event_type=envelope.event_type,
        subject=envelope.subject,
        container=container,
        blob_name=name,
        url=url,
        etag=str(data.get("eTag") or "").strip('"'),
        sequencer=str(data.get("sequencer") or ""),
        event_time=envelope.event_time,
        schema=envelope.schema,
    )


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
