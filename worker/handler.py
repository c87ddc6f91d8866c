"""Checking one region: fetch, keep the region's tags, compare by content, record.

Every step may run twice or die halfway, so each write is repeatable:
1. the snapshot blob is named by its content and written create-only;
2. the report blob is named by both snapshots' content and written create-only (so a rerun
   never raises a second BlobCreated event);
3. the region state (`latest.json`) moves last, under an ETag condition; when another worker
   moved it first, the whole decision is taken again on what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from common import layout
from common.compare import compare
from common.errors import PermanentError, SnapshotError, TransientError, UnknownRegionError
from common.faults import crash_point
from common.logs import log_event
from common.messages import RegionMessage
from common.model import Snapshot
from common.ports import BlobStore
from common.prefixes import PrefixParser
from common.regions import GLOBAL, RegionIndex, index_from_document
from common.render import summary_line
from common.snapshot import (
    canonical_bytes,
    content_sha256,
    parse_json,
    parse_snapshot,
    snapshot_from_document,
    tag_digests,
)
from worker.sources import DEFAULT_LOCATIONS, TagSource

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Outcome(NamedTuple):
    status: str                   # baseline | unchanged | changed | stale
    sha256: str
    report: str | None = None     # report blob name when one was written
    regions: tuple[str, ...] = () # every region name in the data (for discovery)


class Reply(NamedTuple):
    doc: Any                # the parsed JSON document
    regions: RegionIndex   # the reply's region names and codes
    cloud: str
    change_number: str
    origin: str


class ParsedReplies:
    """Parsed replies by body digest. Every location returns the whole cloud, so a worker
    handling many regions parses each distinct reply once and then builds (and validates)
    only the tags of the region at hand. The prefix table is shared for the same reason."""

    def __init__(self, size: int = 2) -> None:
        self.parser = PrefixParser()
        self._size = size
        self._cache: OrderedDict[bytes, Reply] = OrderedDict()

    def get(self, body: bytes, origin: str) -> Reply:
        key = hashlib.sha256(body).digest()
        found = self._cache.get(key)
        if found is None:
            try:
                doc = parse_json(body, origin)
                head = snapshot_from_document({**doc, "values": []}, origin, self.parser)
            except SnapshotError as exc:
                # Truncated or garbled replies happen; after max tries the message says why.
                raise TransientError(f"unusable reply: {exc}") from None
            found = Reply(doc, index_from_document(doc), head.cloud, head.change_number, origin)
            self._cache[key] = found
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return found

    def region(self, reply: Reply, code: str | None) -> Snapshot:
        try:
            return snapshot_from_document(reply.doc, reply.origin, self.parser, region_code=code)
        except SnapshotError as exc:
            raise TransientError(f"unusable reply: {exc}") from None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def handle_region(message: RegionMessage, *, source: TagSource, snapshots: BlobStore, reports: BlobStore,
                  replies: ParsedReplies, clock: Clock = utc_now, max_attempts: int = 5) -> Outcome:
    location = DEFAULT_LOCATIONS[message.cloud] if message.region == GLOBAL else message.region
    fetched = source.fetch(message.cloud, location)
    reply = replies.get(fetched.body, fetched.origin)
    index = reply.regions
    if reply.cloud != message.cloud:
        raise PermanentError(f"{fetched.origin} answered for cloud {reply.cloud!r}, not {message.cloud!r}")
    try:
        code = index.code_for(message.region)
    except UnknownRegionError as exc:
        raise PermanentError(f"{exc} in {fetched.origin} (change {reply.change_number})") from None
    current = replies.region(reply, code)
    digests = tag_digests(current)
    sha = content_sha256(current, digests)

    for _ in range(max_attempts):
        outcome = _record(message, current, sha, location, index, snapshots=snapshots, reports=reports,
                          parser=replies.parser, clock=clock)
        if outcome is not None:
            log_event(log, "region_checked", f"{message.cloud} {message.region}: {outcome.status}",
                      cloud=message.cloud, region=message.region, run_id=message.run_id,
                      outcome=outcome.status, change_number=reply.change_number, location=location,
                      sha256=sha, report=outcome.report, tags=len(current.tags))
            return outcome._replace(regions=tuple(index.names))
    raise TransientError(f"the state of {message.region} kept changing under concurrent writers")


def _record(message: RegionMessage, current: Snapshot, sha: str, location: str, index: RegionIndex, *,
            snapshots: BlobStore, reports: BlobStore, parser: PrefixParser, clock: Clock) -> Outcome | None:
    """One attempt; None when the state moved under us and the decision must be taken again."""
    cloud, region = message.cloud, message.region
    state_blob = snapshots.read(layout.state_name(cloud, region))
    state: dict[str, Any] | None = json.loads(state_blob.data) if state_blob else None
    now = _iso(clock())
    checked = {"last_checked_at": now, "location": location,
               "location_change_number": current.change_number, "run_id": message.run_id}
    etag = state_blob.etag if state_blob else None

    if state is not None and state["sha256"] == sha:
        written = snapshots.replace(layout.state_name(cloud, region),
                                    layout.to_json_bytes({**state, **checked}), etag=etag)
        return Outcome("unchanged", sha) if written else None

    if state is not None and not layout.newer_or_equal(current.change_number, state["changeNumber"]):
        # A location lagging behind what we already recorded: never move the region backwards.
        written = snapshots.replace(layout.state_name(cloud, region),
                                    layout.to_json_bytes({**state, **checked}), etag=etag)
        return Outcome("stale", sha) if written else None

    name = layout.snapshot_name(cloud, region, sha)
    snapshots.create(name, canonical_bytes(current), metadata={"cloud": cloud, "region": region})
    crash_point("after_snapshot")

    report_name = None
    previous = _previous_snapshot(snapshots, state, parser) if state is not None else None
    if previous is not None:
        report = compare(previous, current, region=region, parser=parser, index=index)
        if report["tags"]:
            report_name = layout.report_name(report)
            created = reports.create(report_name, layout.to_json_bytes(report),
                                     metadata={"cloud": cloud, "region": region,
                                               "from_change": report["from"]["changeNumber"],
                                               "to_change": report["to"]["changeNumber"]})
            crash_point("after_report")
            if created:
                log_event(log, "report_written", summary_line(report), cloud=cloud, region=region,
                          report=report_name, summary=report["summary"])

    new_state = {
        "schema": layout.STATE_SCHEMA, "cloud": cloud, "region": region,
        "sha256": sha, "changeNumber": current.change_number, "snapshot": name, "since": now,
        "last_report": report_name or (state or {}).get("last_report"),
        "last_change_at": now if report_name else (state or {}).get("last_change_at"),
        **checked,
    }
    written = snapshots.replace(layout.state_name(cloud, region), layout.to_json_bytes(new_state), etag=etag)
    if not written:
        return None
    return Outcome("baseline" if state is None else "changed", sha, report_name)


def _previous_snapshot(snapshots: BlobStore, state: dict[str, Any], parser: PrefixParser) -> Snapshot | None:
    blob = snapshots.read(state["snapshot"])
    if blob is None:
        # Someone deleted history: start a new baseline rather than report against nothing.
        log.warning("snapshot %s named by the region state is missing; taking a new baseline",
                    state["snapshot"])
        return None
    return parse_snapshot(blob.data, state["snapshot"], parser)
