"""Keeping the history index in step with the snapshot and report blobs.

history/<cloud>/index.bin            the index (core/history_index.py), moved under an ETag
history/<cloud>/changes/<cn>.json    when a change number was first seen (create-only; the
                                     import writes the archive's date, `sync` the time it
                                     first met the number); `import` skips numbers listed here
notifications/<report>/_imported.json   written before an imported report: the notifier does
                                     not announce it (unless `import --notify`)

`sync` reads only what the index does not hold yet: for each region whose state moved, the
reports after the last one applied (and, for a region new to the index, its first
snapshot). Everything it writes is derived from blobs, so `sync(rebuild=True)` on an empty
history container gives the same index.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from core import layout
from core.errors import TransientError
from core.history_index import Builder, Index, change_key
from core.ports import BlobStore
from core.snapshot import parse_snapshot
from runtime.logs import log_event

log = logging.getLogger(__name__)
CHANGE_SCHEMA = "servicetags.history-change/v1"
INDEX_CONTENT_TYPE = "application/octet-stream"
_REPORT_NAME = re.compile(r"/(?P<old>[^/]+?)-(?P<new>[^/_]+)_[0-9a-f]+_[0-9a-f]+\.json$")


def index_name(cloud: str) -> str:
    return f"{cloud}/index.bin"


def change_name(cloud: str, change_number: str) -> str:
    return f"{cloud}/changes/{change_number}.json"


def imported_marker(report_name: str) -> str:
    """In the notifications container: this report came from `servicetags import`."""
    return f"{report_name}/_imported.json"


def is_imported(markers: BlobStore, report_name: str) -> bool:
    return markers.read(imported_marker(report_name)) is not None


def load_index(history: BlobStore, cloud: str) -> Index | None:
    blob = history.read(index_name(cloud))
    return Index.from_bytes(blob.data, f"history/{index_name(cloud)}") if blob else None


def record_change(history: BlobStore, cloud: str, change_number: str, date: str, **extra: Any) -> bool:
    doc = {"schema": CHANGE_SCHEMA, "cloud": cloud, "changeNumber": change_number, "date": date, **extra}
    return history.create(change_name(cloud, change_number), layout.to_json_bytes(doc))


def change_date(history: BlobStore, cloud: str, change_number: str) -> str | None:
    blob = history.read(change_name(cloud, change_number))
    return str(json.loads(blob.data)["date"]) if blob else None


def _report_order(name: str) -> tuple[Any, ...]:
    m = _REPORT_NAME.search(name)
    if m is None:
        return ((2, 0, name), (2, 0, name))
    return (change_key(m["new"]), change_key(m["old"]), name)


class Synced(NamedTuple):
    changed: bool  # whether the index blob was written
    new_reports: list[str]  # report names applied by this call
    data: bytes  # the index as stored now


def sync(
    cloud: str,
    *,
    snapshots: BlobStore,
    reports: BlobStore,
    history: BlobStore,
    clock: Callable[[], datetime],
    rebuild: bool = False,
    max_attempts: int = 5,
) -> Synced:
    """Bring the index up to date with the blobs; idempotent, and safe to run concurrently
    (the index moves under an ETag; a loser starts again from what won)."""
    for _ in range(max_attempts):
        blob = history.read(index_name(cloud))
        if blob is not None and not rebuild:
            builder = Builder.from_index(Index.from_bytes(blob.data, f"history/{index_name(cloud)}"))
        else:
            builder = Builder(cloud)
        new = _catch_up(builder, cloud, snapshots=snapshots, reports=reports)
        _fill_dates(builder, cloud, history, clock)
        data = builder.to_bytes()
        if blob is not None and blob.data == data:
            return Synced(False, [], data)
        if history.replace(
            index_name(cloud), data, etag=blob.etag if blob else None, content_type=INDEX_CONTENT_TYPE
        ):
            return Synced(True, new, data)
    raise TransientError(f"the {cloud} history index kept changing under concurrent writers")


def _states(snapshots: BlobStore, cloud: str) -> dict[str, str]:
    """region -> its state blob name."""
    out = {}
    for name in snapshots.names(f"{cloud}/"):
        parts = name.split("/")
        if len(parts) == 3 and parts[2] == "latest.json":
            out[parts[1]] = name
    return out


def _catch_up(builder: Builder, cloud: str, *, snapshots: BlobStore, reports: BlobStore) -> list[str]:
    applied = []
    for region, state_name in sorted(_states(snapshots, cloud).items()):
        state_blob = snapshots.read(state_name)
        if state_blob is None:
            continue
        state = json.loads(state_blob.data)
        known = builder.regions.get(region)
        if known is not None and known.get("sha256") == state["sha256"]:
            continue
        names = sorted(
            (n for n in reports.names(f"{cloud}/{region}/") if not builder.has_report(n)), key=_report_order
        )
        docs = {}
        for name in names:
            blob = reports.read(name)
            if blob is not None:
                docs[name] = json.loads(blob.data)
        if known is None:
            first = docs[names[0]] if names and names[0] in docs else None
            _baseline(
                builder,
                cloud,
                region,
                snapshots=snapshots,
                sha=first["from"]["sha256"] if first else state["sha256"],
                change_number=first["from"]["changeNumber"] if first else state["changeNumber"],
            )
        for name, doc in docs.items():
            if builder.apply_report(name, doc):
                applied.append(name)
        if builder.regions.get(region, {}).get("sha256") != state["sha256"]:
            # A snapshot with no report before it (a history deleted by hand, then a new
            # baseline): the index keeps what it knew and follows the reports from here.
            log_event(
                log,
                "history_gap",
                f"history index: {cloud} {region} is at {state['sha256'][:16]} but "
                "its reports end elsewhere; rebuild the index if blobs were deleted",
                level=logging.WARNING,
                cloud=cloud,
                region=region,
            )
            builder.regions.setdefault(region, {"baseline": state["changeNumber"], "report": None}).update(
                sha256=state["sha256"], changeNumber=state["changeNumber"]
            )
    return applied


def _baseline(
    builder: Builder, cloud: str, region: str, *, snapshots: BlobStore, sha: str, change_number: str
) -> None:
    name = layout.snapshot_name(cloud, region, sha)
    blob = snapshots.read(name)
    if blob is None:
        # A region whose first report starts from nothing (a new region): no baseline tags.
        builder.regions[region] = {
            "sha256": sha,
            "changeNumber": change_number,
            "baseline": change_number,
            "report": None,
        }
        return
    snapshot = parse_snapshot(blob.data, f"snapshots/{name}")
    builder.baseline(
        region=region,
        change_number=snapshot.change_number,
        sha256=sha,
        tags=((t.id, t.system_service, t.prefixes) for t in snapshot.tags.values()),
    )


def _fill_dates(builder: Builder, cloud: str, history: BlobStore, clock: Callable[[], datetime]) -> None:
    # Every change number in the ledger, including weeks when no region changed.
    ledger = {name.rsplit("/", 1)[1].removesuffix(".json") for name in history.names(f"{cloud}/changes/")}
    for change_number in sorted(ledger - set(builder.dates), key=change_key):
        date = change_date(history, cloud, change_number)
        if date is not None:
            builder.set_date(change_number, date)
    for change_number in sorted(builder.change_numbers() - set(builder.dates), key=change_key):
        date = change_date(history, cloud, change_number)
        if date is None:
            # First met here: now is when it was seen (a live report is synced minutes after).
            record_change(history, cloud, change_number, iso(clock()), seen_by="sync")
            date = change_date(history, cloud, change_number) or iso(clock())
        builder.set_date(change_number, date)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
