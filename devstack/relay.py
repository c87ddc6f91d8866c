"""A local stand-in for a storage account's Event Grid system topic.

Azurite emits no events, so this relay lists a container and turns every blob it has not
delivered yet into one `Microsoft.Storage.BlobCreated` event shaped like Event Grid's own
(tests compare it key for key with recorded payloads under tests/samples/), in Event Grid
schema or CloudEvents 1.0, and hands it to a deliverer:

- `queue_deliverer`: one event object per queue message, base64 like Event Grid writes;
- `webhook_deliverer`: a one-element array (Event Grid schema) or a single CloudEvent.

Delivery is at least once: a blob is keyed by (name, etag), and the key is persisted to
the state file atomically only after delivery succeeded. A crash in between re-sends that
one event after a restart; nothing already delivered is sent again. A replaced blob has a
new etag and raises a new event, as in Azure.

    python -m devstack.relay --connection-string CS --container reports --queue change-events
        [--schema eventgrid|cloudevents] [--webhook URL] [--state-dir DIR] [--interval S]

runs until SIGTERM; with --state-dir it writes DIR/relay.json ({"pid", ...}) once running.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from runtime.logs import configure, log_event

log = logging.getLogger(__name__)

Deliver = Callable[[str], None]
Schema = Literal["eventgrid", "cloudevents"]
BlobKey = tuple[str, str]

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
STATE_SCHEMA = "servicetags.relay-state/v1"
STATE_FILE = "relay-state.json"
INFO_FILE = "relay.json"
SUBSCRIPTION_NAME = "SERVICETAGS-LOCAL-RELAY"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
EVENTGRID_CONTENT_TYPE = "application/json; charset=utf-8"
_MAX_BACKOFF = 10.0  # seconds between polls while deliveries keep failing


class RelayStateError(RuntimeError):
    """The relay's state file cannot be read."""


class WebhookDeliveryError(RuntimeError):
    """The webhook did not accept the event; the relay tries again on its next poll."""


class _ContainerListing(Protocol):
    """What the relay needs from an azure.storage.blob ContainerClient."""

    container_name: str

    def list_blobs(self) -> Iterable[Any]: ...

    def get_blob_client(self, blob: str) -> Any: ...


# --------------------------------------------------------------------------------------
# The event (pure)


def account_resource_id(subscription_id: str, resource_group: str, account_name: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Storage/storageAccounts/{account_name}"
    )


def event_time(moment: datetime) -> str:
    """Event Grid's format: UTC, seven fractional digits (.NET ticks), `Z`."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"


def storage_request_id() -> str:
    # Storage request ids are GUIDs whose last six hex digits are zero.
    return str(uuid.uuid4())[:-6] + "000000"


def blob_created_event(
    *,
    schema: Schema,
    topic: str,
    container: str,
    name: str,
    url: str,
    etag: str,
    content_type: str,
    content_length: int,
    blob_type: str,
    created: datetime,
    sequencer: int,
) -> dict[str, Any]:
    """One BlobCreated event, keys in the order Event Grid writes them."""
    subject = f"/blobServices/default/containers/{container}/blobs/{name}"
    data = {
        "api": "PutBlob",
        "clientRequestId": str(uuid.uuid4()),
        "requestId": storage_request_id(),
        "eTag": etag,
        "contentType": content_type,
        "contentLength": content_length,
        "blobType": blob_type,
        "url": url,
        "sequencer": f"{sequencer:032X}",
        "storageDiagnostics": {"batchId": str(uuid.uuid4())},
    }
    if schema == "cloudevents":
        return {
            "source": topic,
            "subject": subject,
            "type": BLOB_CREATED,
            "time": event_time(created),
            "id": str(uuid.uuid4()),
            "data": data,
            "specversion": "1.0",
        }
    return {
        "topic": topic,
        "subject": subject,
        "eventType": BLOB_CREATED,
        "eventTime": event_time(created),
        "id": str(uuid.uuid4()),
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


# --------------------------------------------------------------------------------------
# Persisted state


class _State:
    """Delivered (name, etag) keys and the last sequencer; saved atomically."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sequencer = 0
        self.delivered: set[BlobKey] = set()
        if path is not None and path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                self.sequencer = int(doc["sequencer"])
                self.delivered = {(str(name), str(etag)) for name, etag in doc["delivered"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise RelayStateError(
                    f"{path}: not a relay state file ({exc}); delete it to re-send every blob once"
                ) from None

    def save(self) -> None:
        if self.path is None:
            return
        doc = {
            "schema": STATE_SCHEMA,
            "sequencer": self.sequencer,
            "delivered": sorted([name, etag] for name, etag in self.delivered),
        }
        _write_atomically(self.path, json.dumps(doc, indent=1) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    # Same directory, fsync, rename: a crash leaves either the old or the new file whole.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --------------------------------------------------------------------------------------
# The relay


def _container_client(blobs: Any) -> _ContainerListing:
    if hasattr(blobs, "list_blobs"):
        listing: _ContainerListing = blobs
        return listing
    # An AzureBlobStore: the port has no listing with properties, its client has.
    inner = getattr(blobs, "_client", None)
    if inner is not None and hasattr(inner, "list_blobs"):
        inner_listing: _ContainerListing = inner
        return inner_listing
    raise TypeError(f"expected a ContainerClient or AzureBlobStore, not {type(blobs).__name__}")


class BlobEventRelay:
    def __init__(
        self,
        blobs: Any,
        *,
        account_name: str,
        container: str = "reports",
        deliver: Deliver,
        schema: Schema = "eventgrid",
        state_path: Path | None,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "servicetags-local",
    ) -> None:
        self._client = _container_client(blobs)
        if self._client.container_name != container:
            raise ValueError(
                f"container {container!r} is not the client's container {self._client.container_name!r}"
            )
        if schema not in ("eventgrid", "cloudevents"):
            raise ValueError(f"schema must be 'eventgrid' or 'cloudevents', not {schema!r}")
        self.container, self.schema, self._deliver = container, schema, deliver
        self.topic = account_resource_id(subscription_id, resource_group, account_name)
        self._state = _State(state_path)
        # An event whose delivery failed is re-sent unchanged (same id), as Event Grid retries.
        self._pending: dict[BlobKey, str] = {}

    def poll_once(self) -> int:
        """Deliver an event for each blob not delivered yet, oldest first; returns how many.
        A failed delivery raises, after persisting what was delivered before it."""
        blobs = sorted(
            self._client.list_blobs(), key=lambda blob: (blob.creation_time or blob.last_modified, blob.name)
        )
        present: set[BlobKey] = set()
        delivered = 0
        for blob in blobs:
            key = (blob.name, str(blob.etag).strip('"'))
            present.add(key)
            if key in self._state.delivered:
                continue
            text = self._pending.get(key) or self._event_text(blob)
            self._pending[key] = text
            self._deliver(text)
            del self._pending[key]
            self._state.delivered.add(key)
            self._state.save()  # after every delivery: a crash re-sends at most this one
            delivered += 1
            event = json.loads(text)
            log_event(
                log,
                "event_relayed",
                f"relayed BlobCreated for {blob.name}",
                blob=blob.name,
                container=self.container,
                etag=key[1],
                event_id=event["id"],
                sequencer=event["data"]["sequencer"],
                schema=self.schema,
            )
        # Forget blobs that are gone (or were replaced) so the state stays as small as the container.
        if not self._state.delivered <= present:
            self._state.delivered &= present
            self._state.save()
        return delivered

    def run(self, stop_event: threading.Event, interval: float = 0.5) -> None:
        """Poll until `stop_event` is set; failures are logged and retried with backoff."""
        wait = interval
        while not stop_event.is_set():
            try:
                self.poll_once()
                wait = interval
            except Exception as exc:
                log_event(
                    log,
                    "event_relay_failed",
                    f"delivery failed, retrying in {wait:.1f}s: {exc}",
                    level=logging.WARNING,
                    container=self.container,
                    exc_info=not isinstance(exc, WebhookDeliveryError),
                )
                stop_event.wait(wait)
                wait = min(max(wait, 0.1) * 2, _MAX_BACKOFF)
                continue
            stop_event.wait(interval)

    def _event_text(self, blob: Any) -> str:
        self._state.sequencer += 1
        created = blob.creation_time or blob.last_modified or datetime.now(UTC)
        blob_type = getattr(blob.blob_type, "value", blob.blob_type) or "BlockBlob"
        event = blob_created_event(
            schema=self.schema,
            topic=self.topic,
            container=self.container,
            name=blob.name,
            url=self._client.get_blob_client(blob.name).url,
            etag=str(blob.etag).strip('"'),
            content_type=blob.content_settings.content_type or "application/octet-stream",
            content_length=int(blob.size or 0),
            blob_type=str(blob_type),
            created=created,
            sequencer=self._state.sequencer,
        )
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------
# Deliverers


def queue_deliverer(queue_client: Any, *, encoding: Literal["base64", "text"] = "base64") -> Deliver:
    """One event per message. `queue_client` must have no encode policy: we encode here."""
    if encoding not in ("base64", "text"):
        raise ValueError(f"encoding must be 'base64' or 'text', not {encoding!r}")

    def deliver(text: str) -> None:
        content = base64.b64encode(text.encode("utf-8")).decode("ascii") if encoding == "base64" else text
        queue_client.send_message(content)

    return deliver


def webhook_deliverer(
    url: str, headers: Mapping[str, str] | None = None, *, timeout: float = 30.0
) -> Deliver:
    """POST like Event Grid: a one-element array with `aeg-event-type: Notification`, or a
    single CloudEvent. Anything but 200-204 raises WebhookDeliveryError."""
    # Local endpoints only: ignore *_proxy variables that would route loopback elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    shown = _without_query(url)  # the query may hold the shared secret (?code=...)

    def deliver(text: str) -> None:
        cloud = "specversion" in json.loads(text)
        body = text if cloud else f"[{text}]"
        request = urllib.request.Request(
            url,
            data=body.encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": CLOUDEVENTS_CONTENT_TYPE if cloud else EVENTGRID_CONTENT_TYPE,
                "aeg-event-type": "Notification",
                "aeg-subscription-name": SUBSCRIPTION_NAME,
                **(headers or {}),
            },
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response open
            raise WebhookDeliveryError(f"{shown} answered {exc.code} {exc.reason}") from None
        except (OSError, urllib.error.URLError) as exc:
            raise WebhookDeliveryError(f"{shown} did not answer: {exc}") from None
        if not 200 <= status <= 204:  # Event Grid's success codes
            raise WebhookDeliveryError(f"{shown} answered {status}, not 200-204")

    return deliver


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# --------------------------------------------------------------------------------------
# Entry point


def _account_name(connection_string: str) -> str:
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return parts.get("AccountName", "devstoreaccount1")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devstack.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connection-string",
        default=os.environ.get("SERVICETAGS_STORAGE_CONNECTION_STRING"),
        help="storage connection string (default: $SERVICETAGS_STORAGE_CONNECTION_STRING)",
    )
    parser.add_argument("--container", default="reports")
    parser.add_argument("--queue", default="change-events", help="destination queue (without --webhook)")
    parser.add_argument(
        "--encoding",
        choices=("base64", "text"),
        default="base64",
        help="queue message encoding (Event Grid writes base64)",
    )
    parser.add_argument("--webhook", help="POST events to this URL instead of the queue")
    parser.add_argument(
        "--webhook-header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra header for webhook calls (repeatable)",
    )
    parser.add_argument("--schema", choices=("eventgrid", "cloudevents"), default="eventgrid")
    parser.add_argument("--state-dir", type=Path, help="keep delivered keys here across restarts")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between listings")
    parser.add_argument("--subscription-id", default="00000000-0000-0000-0000-000000000000")
    parser.add_argument("--resource-group", default="servicetags-local")
    parser.add_argument(
        "--log-format", choices=("json", "text"), default=os.environ.get("SERVICETAGS_LOG_FORMAT", "json")
    )
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error("--connection-string (or SERVICETAGS_STORAGE_CONNECTION_STRING) is required")
    for header in args.webhook_header:
        if ":" not in header:
            parser.error(f"--webhook-header {header!r} must be NAME:VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    configure(args.log_format, os.environ.get("SERVICETAGS_LOG_LEVEL", "INFO"))
    service = BlobServiceClient.from_connection_string(args.connection_string)
    container = service.get_container_client(args.container)
    with contextlib.suppress(ResourceExistsError):  # local stack only: nothing else creates it first
        container.create_container()
    if args.webhook:
        headers = dict(h.split(":", 1) for h in args.webhook_header)
        deliver = webhook_deliverer(args.webhook, {k.strip(): v.strip() for k, v in headers.items()})
        target = _without_query(args.webhook)
    else:
        queue = QueueClient.from_connection_string(args.connection_string, args.queue)
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        deliver, target = queue_deliverer(queue, encoding=args.encoding), f"queue {args.queue}"
    state_dir: Path | None = args.state_dir
    try:
        relay = BlobEventRelay(
            container,
            account_name=_account_name(args.connection_string),
            container=args.container,
            deliver=deliver,
            schema=args.schema,
            state_path=state_dir / STATE_FILE if state_dir else None,
            subscription_id=args.subscription_id,
            resource_group=args.resource_group,
        )
    except RelayStateError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    info = {"pid": os.getpid(), "container": args.container, "target": target, "schema": args.schema}
    if state_dir is not None:
        _write_atomically(state_dir / INFO_FILE, json.dumps(info, indent=2) + "\n")
    log_event(log, "relay_started", f"relaying {args.container} to {target}", **info)
    try:
        relay.run(stop, args.interval)
    finally:
        if state_dir is not None:
            (state_dir / INFO_FILE).unlink(missing_ok=True)
        log_event(log, "relay_stopped", "relay stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
