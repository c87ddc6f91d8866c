"""The local relay for run markers: BlobCreated events for `*/complete.json` in `runs` only.

The Azure event subscription filters on the subject (`subject_ends_with = "/complete.json"`,
terraform/digest.tf), so manifests and region outcomes raise no events there; this relay does
the same in front of `devstack.relay.BlobEventRelay`, whose events and delivery it reuses.

    python -m devstack.runs_relay --connection-string CS [--container runs] [--queue change-events]
        [--webhook URL] [--schema eventgrid|cloudevents] [--state-dir DIR] [--interval S]

With `--webhook` the events are POSTed like Event Grid's push delivery (for `servicetags
notifier serve`) instead of queued.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devstack.relay import (
    STATE_FILE,
    BlobEventRelay,
    Deliver,
    _account_name,
    queue_deliverer,
    webhook_deliverer,
)
from runtime.logs import configure

SUFFIX = "/complete.json"


class EndsWith:
    """A container client that lists only blobs whose name ends with `suffix` (every blob is
    listed: for small containers and tests; the relay uses RunMarkers)."""

    def __init__(self, client: Any, suffix: str) -> None:
        self._client, self._suffix = client, suffix
        self.container_name = client.container_name

    def list_blobs(self) -> Iterator[Any]:
        return (b for b in self._client.list_blobs() if b.name.endswith(self._suffix))

    def get_blob_client(self, blob: str) -> Any:
        return self._client.get_blob_client(blob)


class RunMarkers:
    """The complete markers of a `runs` container (`<cloud>/<run>/complete.json`), listed
    without reading every outcome: listing the whole container, which holds a blob per
    region per run, costs Azurite about 0.3 ms a blob on every poll (0.1 s at five runs of
    63 regions, and growing) and slowed everything else it served. Per poll: the run prefixes
    (one entry per run, through the `/` delimiter) and, for each run whose marker has not
    been seen yet, a listing of that one name. A marker once seen is create-only, so it is
    remembered, and forgotten with its run."""

    def __init__(self, client: Any, leaf: str = SUFFIX.lstrip("/")) -> None:
        self._client, self._leaf = client, leaf
        self.container_name = client.container_name
        self._seen: dict[str, Any] = {}  # run prefix -> the marker's properties

    def list_blobs(self) -> Iterator[Any]:
        runs = [
            run.name
            for cloud in self._client.walk_blobs(delimiter="/")
            if cloud.name.endswith("/")
            for run in self._client.walk_blobs(name_starts_with=cloud.name, delimiter="/")
            if run.name.endswith("/")
        ]
        self._seen = {run: blob for run, blob in self._seen.items() if run in runs}
        for run in runs:
            if run not in self._seen:
                name = run + self._leaf
                found = [b for b in self._client.list_blobs(name_starts_with=name) if b.name == name]
                if found:
                    self._seen[run] = found[0]
        return iter(list(self._seen.values()))

    def get_blob_client(self, blob: str) -> Any:
        return self._client.get_blob_client(blob)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.runs_relay", description=__doc__.split("\n\n")[0]
    )
    connection = os.environ.get("SERVICETAGS_STORAGE_CONNECTION_STRING")
    parser.add_argument("--connection-string", default=connection, required=not connection)
    parser.add_argument("--container", default="runs")
    parser.add_argument("--queue", default="change-events", help="destination queue (without --webhook)")
    parser.add_argument("--webhook", help="POST events to this URL instead of the queue")
    parser.add_argument("--schema", choices=("eventgrid", "cloudevents"), default="eventgrid")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--subscription-id", default="00000000-0000-0000-0000-000000000000")
    parser.add_argument("--resource-group", default="servicetags-local")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure(
        os.environ.get("SERVICETAGS_LOG_FORMAT", "json"), os.environ.get("SERVICETAGS_LOG_LEVEL", "INFO")
    )
    container = BlobServiceClient.from_connection_string(args.connection_string).get_container_client(
        args.container
    )
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    deliver: Deliver
    if args.webhook:
        deliver = webhook_deliverer(args.webhook)
    else:
        queue = QueueClient.from_connection_string(args.connection_string, args.queue)
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        deliver = queue_deliverer(queue)
    if args.state_dir:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    relay = BlobEventRelay(
        RunMarkers(container),
        account_name=_account_name(args.connection_string),
        container=args.container,
        deliver=deliver,
        schema=args.schema,
        state_path=args.state_dir / STATE_FILE if args.state_dir else None,
        subscription_id=args.subscription_id,
        resource_group=args.resource_group,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    relay.run(stop, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
