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

from core import layout
from core.canonical import canonical_bytes, content_sha256, tag_digests
from core.change_report import change_report
from core.errors import PermanentError, SnapshotError, TransientError, UnknownRegionError
from core.lifecycle import (
    EMPTY_SHA256,
    Decision,
    RegionEvent,
    Status,
    after_retirement,
    decide,
    is_newer,
    is_older,
    is_retired,
    recorded_change_number,
)
from core.messages import RegionMessage, parse_region_message
from core.model import Snapshot
from core.ports import BlobStore, Clock, Fetched, TagSource
from core.prefixes import PrefixParser
from core.regions import GLOBAL, RegionIndex, index_from_document
from core.render import summary_line
from core.report import with_region_event
from core.snapshot import parse_json, parse_snapshot, snapshot_from_document
from runtime.crash_points import crash_point
from runtime.logs import log_event
from worker import run_progress
from worker.discovery import discover
from worker.observed import observe, observed_state, propagated
from worker.sources import DEFAULT_LOCATIONS, UnknownLocation

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Outcome(NamedTuple):
    """What one region message ended in: the one typed result a hook (a per-run record, a
    digest) reads. Poison is the only other end, decided by the queue loop from the error."""

    status: Status  # baseline | unchanged | changed | added | removed | stale | retired
    sha256: str
    report: str | None = None  # report blob name when one was written
    regions: tuple[str, ...] = ()  # every region name in the data (for discovery)
    region_event: RegionEvent | None = None
    change_number: str = ""  # the reply's top-level change number
    observed: dict[str, Any] | None = None  # the observed source's view of the region, if configured


class Reply(NamedTuple):
    doc: Any  # the parsed JSON document
    regions: RegionIndex  # the reply's region names and codes
    cloud: str
    change_number: str
    origin: str
    digest: str = ""  # SHA-256 of the body: one distinct reply


class ParsedReplies:
    """Parsed replies by body digest. Every location returns the whole cloud, so a worker
    handling many regions parses each distinct reply once and then builds (and validates)
    only the tags of the region at hand. The prefix table is shared for the same reason."""

    def __init__(self, size: int = 4) -> None:
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
            found = Reply(doc, index_from_document(doc), head.cloud, head.change_number, origin, key.hex())
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


def _fetch(source: TagSource, message: RegionMessage) -> tuple[str, Fetched]:
    """The reply as seen from the region's own location; from the cloud's default location
    when that one is unknown to the source (a retired region's location, or a name that is
    not a location at all): every location returns the whole cloud, and the region's fate is
    then decided on the data."""
    location = DEFAULT_LOCATIONS[message.cloud] if message.region == GLOBAL else message.region
    try:
        return location, source.fetch(message.cloud, location)
    except UnknownLocation as exc:
        fallback = DEFAULT_LOCATIONS[message.cloud]
        if location == fallback:
            raise
        log_event(
            log,
            "location_fallback",
            f"{exc}; asking {fallback} instead",
            cloud=message.cloud,
            region=message.region,
            location=location,
            fallback=fallback,
        )
        return fallback, source.fetch(message.cloud, fallback)


def handle_message(
    content: str | bytes,
    *,
    source: TagSource,
    snapshots: BlobStore,
    reports: BlobStore,
    runs: BlobStore,
    enqueue: Callable[[str], None],
    replies: ParsedReplies,
    observed: TagSource | None = None,
    clock: Clock = utc_now,
) -> Outcome:
    """One region message, start to end: parse it (BadMessage: poison), check the region,
    keep the cloud document and fan out to new regions (a `global` check), then record the
    outcome under its run (the last one closes the run). Each step is repeatable."""
    message = parse_region_message(content)
    outcome = handle_region(
        message,
        source=source,
        snapshots=snapshots,
        reports=reports,
        replies=replies,
        observed=observed,
        clock=clock,
    )
    if message.region == GLOBAL and outcome.status != "stale":
        # Every `global` check keeps the cloud document; only an `all` run fans out.
        discover(
            message,
            outcome.regions,
            snapshots=snapshots,
            enqueue=enqueue,
            change_number=outcome.change_number,
            fan_out=message.discover,
        )
    run_progress.record_outcome(
        message, outcome.status, store=runs, report=outcome.report, found=outcome.regions
    )
    return outcome


def handle_region(
    message: RegionMessage,
    *,
    source: TagSource,
    snapshots: BlobStore,
    reports: BlobStore,
    replies: ParsedReplies,
    clock: Clock = utc_now,
    max_attempts: int = 5,
    observed: TagSource | None = None,
) -> Outcome:
    location, fetched = _fetch(source, message)
    reply = replies.get(fetched.body, fetched.origin)
    index = reply.regions
    if reply.cloud != message.cloud:
        raise PermanentError(f"{fetched.origin} answered for cloud {reply.cloud!r}, not {message.cloud!r}")
    try:
        code = index.location_code(message.region)
    except UnknownRegionError as exc:
        raise PermanentError(f"{exc} (in {fetched.origin}, change {reply.change_number})") from None
    if code is None:  # not in this reply: a vanished region, or one that never existed
        current = Snapshot(reply.cloud, reply.change_number, {}, fetched.origin)
        sha = EMPTY_SHA256
    else:
        current = replies.region(reply, code)
        sha = content_sha256(current, tag_digests(current))
    seen = Seen(reply, fetched.origin, location, code is not None)
    observation = observe(observed, message, replies) if observed is not None else None

    for _ in range(max_attempts):
        outcome = _record(
            message,
            current,
            sha,
            seen,
            snapshots=snapshots,
            reports=reports,
            parser=replies.parser,
            clock=clock,
            observation=observation,
        )
        if outcome is not None:
            log_event(
                log,
                "region_checked",
                f"{message.cloud} {message.region}: {outcome.status}",
                cloud=message.cloud,
                region=message.region,
                run_id=message.run_id,
                outcome=outcome.status,
                change_number=reply.change_number,
                location=location,
                sha256=sha,
                report=outcome.report,
                tags=len(current.tags),
                region_event=outcome.region_event,
            )
            return outcome._replace(
                regions=tuple(index.names), change_number=reply.change_number, observed=observation
            )
    raise TransientError(f"the state of {message.region} kept changing under concurrent writers")


class Seen(NamedTuple):
    reply: Reply
    origin: str
    location: str
    present: bool  # whether the reply lists the region


def _read_json(store: BlobStore, name: str) -> tuple[dict[str, Any] | None, str | None]:
    blob = store.read(name)
    if blob is None:
        return None, None
    return json.loads(blob.data), blob.etag


def _record(
    message: RegionMessage,
    current: Snapshot,
    sha: str,
    seen: Seen,
    *,
    snapshots: BlobStore,
    reports: BlobStore,
    parser: PrefixParser,
    clock: Clock,
    observation: dict[str, Any] | None,
) -> Outcome | None:
    """One attempt; None when the state moved under us and the decision must be taken again."""
    cloud, region = message.cloud, message.region
    state_name = layout.state_name(cloud, region)
    state, etag = _read_json(snapshots, state_name)
    # The cloud document matters only to a region without a state (new, or baseline): one
    # read fewer for every other check.
    cloud_doc = _read_json(snapshots, layout.regions_name(cloud))[0] if state is None else None
    decision = decide(
        state=state,
        present=seen.present,
        sha256=sha,
        change_number=current.change_number,
        cloud=cloud_doc,
        region=region,
    )
    now = _iso(clock())
    if decision is None:
        sighting = ((cloud_doc or {}).get("first_seen") or {}).get(region)
        if (
            cloud_doc
            and sighting
            and region in (cloud_doc.get("regions") or [])
            and is_newer(current.change_number, {"changeNumber": str(sighting.get("change_number"))})
        ):
            # Watched, gone again before its first check: nothing to report, but no poison either.
            _retire_in_cloud(
                snapshots,
                cloud,
                region,
                {"since": now, "change_number": current.change_number, "report": None},
            )
            return Outcome("retired", sha)
        raise PermanentError(
            f"{seen.reply.regions.unknown(region)} in {seen.origin} (change {current.change_number})"
        )
    visited = {
        "last_checked_at": now,
        "run_id": message.run_id,
        "last_outcome": decision.status,
        **({"observed": observed_state(state, observation, sha, now)} if observation else {}),
        **propagated(state, observation, now),
    }
    checked = {**visited, "location": seen.location, "location_change_number": current.change_number}

    if decision.status in ("stale", "retired", "unchanged"):
        assert state is not None
        if decision.status == "stale":
            _regressed(seen, state, region, snapshots=snapshots, now=now)
            update = {
                **state,
                **visited,
                "stale": {
                    "since": (state.get("stale") or {}).get("since", now),
                    "change_number": current.change_number,
                    "recorded": str(recorded_change_number(state)),
                },
            }
        elif decision.status == "retired":
            update = {**state, **visited}
        else:
            update = {**{k: v for k, v in state.items() if k != "stale"}, **checked}
        if not snapshots.replace(state_name, layout.to_json_bytes(update), etag=etag):
            return None
        if decision.status == "retired":
            _retire_in_cloud(snapshots, cloud, region, state["retired"])
        if state.get("last_report_run_id") == message.run_id and state.get("last_report"):
            # A redelivery of this run's message after the state moved (the worker died before
            # the message was deleted): the outcome is still the report this run wrote, so the
            # run's digest names it.
            return Outcome(
                state.get("last_report_status") or "changed",
                sha,
                state["last_report"],
                region_event=state.get("last_report_region_event"),
            )
        return Outcome(decision.status, sha)

    return _record_change(
        message,
        current,
        sha,
        seen,
        decision=decision,
        state=state,
        etag=etag,
        checked=checked,
        snapshots=snapshots,
        reports=reports,
        parser=parser,
        observation=observation,
    )


def _report(
    previous: Snapshot,
    current: Snapshot,
    seen: Seen,
    decision: Decision,
    *,
    message: RegionMessage,
    reports: BlobStore,
    parser: PrefixParser,
) -> str | None:
    """Write the change report (create-only, content-named); its name, None when nothing changed."""
    cloud, region = message.cloud, message.region
    # A region missing from the reply is named by the previous snapshot's tags alone.
    report = change_report(
        previous, current, region=region, parser=parser, index=seen.reply.regions if seen.present else None
    )
    if not report["tags"]:
        return None
    event = decision.region_event
    if event is not None:
        report = with_region_event(report, event)
    name = layout.report_name(report)
    created = reports.create(
        name,
        layout.to_json_bytes(report),
        metadata={
            "cloud": cloud,
            "region": region,
            "from_change": report["from"]["changeNumber"],
            "to_change": report["to"]["changeNumber"],
            **({"region_event": event} if event else {}),
        },
    )
    crash_point("after_report")
    if created:
        log_event(
            log,
            "report_written",
            summary_line(report),
            cloud=cloud,
            region=region,
            report=name,
            summary=report["summary"],
            region_event=event,
        )
    return name


def _record_change(
    message: RegionMessage,
    current: Snapshot,
    sha: str,
    seen: Seen,
    *,
    decision: Decision,
    state: dict[str, Any] | None,
    etag: str | None,
    checked: dict[str, Any],
    snapshots: BlobStore,
    reports: BlobStore,
    parser: PrefixParser,
    observation: dict[str, Any] | None,
) -> Outcome | None:
    """Baseline, change, new or removed region: snapshot, report, then the state (and for a
    removed region, its retirement in the cloud document), each write repeatable."""
    cloud, region = message.cloud, message.region
    now = checked["last_checked_at"]
    name = layout.snapshot_name(cloud, region, sha)
    snapshots.create(name, canonical_bytes(current), metadata={"cloud": cloud, "region": region})
    crash_point("after_snapshot")

    previous: Snapshot | None = None
    if decision.previous == "state":
        assert state is not None
        previous = _previous_snapshot(snapshots, state, parser)
    elif decision.previous == "empty":
        previous = Snapshot(cloud, decision.from_change_number or current.change_number, {}, "")
    report_name = None
    if previous is not None:
        report_name = _report(
            previous, current, seen, decision, message=message, reports=reports, parser=parser
        )

    kept = {k: v for k, v in (state or {}).items() if k not in ("stale", "retired")}
    new_state = {
        **kept,
        "schema": layout.STATE_SCHEMA,
        "cloud": cloud,
        "region": region,
        "sha256": sha,
        "changeNumber": current.change_number,
        "snapshot": name,
        "since": now,
        "last_report": report_name or (state or {}).get("last_report"),
        "last_change_at": now if report_name else (state or {}).get("last_change_at"),
        **checked,
    }
    if report_name:
        new_state["last_report_to_sha256"] = sha
        new_state["last_report_run_id"] = message.run_id
        new_state["last_report_status"] = decision.status
        new_state["last_report_region_event"] = decision.region_event
        new_state.pop("last_report_propagated_at", None)
        if observation and observation.get("sha256") == sha:
            new_state["last_report_propagated_at"] = now
    if decision.status == "removed":
        new_state["retired"] = {"since": now, "change_number": current.change_number, "report": report_name}
    if decision.status == "added":
        new_state["first_seen_at"] = now
    if not snapshots.replace(layout.state_name(cloud, region), layout.to_json_bytes(new_state), etag=etag):
        return None
    if decision.status == "removed":
        crash_point("after_retire")
        _retire_in_cloud(snapshots, cloud, region, new_state["retired"])
    return Outcome(decision.status, sha, report_name, region_event=decision.region_event)


def _retire_in_cloud(snapshots: BlobStore, cloud: str, region: str, retired: dict[str, Any]) -> None:
    """Take a retired region off the producer's list (repeatable: a rerun finds it done)."""
    name = layout.regions_name(cloud)
    for _ in range(10):
        doc, etag = _read_json(snapshots, name)
        if is_retired(doc, region):
            return
        updated = after_retirement(
            doc,
            region,
            since=retired["since"],
            change_number=retired["change_number"],
            report=retired.get("report"),
        )
        if snapshots.replace(name, layout.to_json_bytes(updated), etag=etag):
            log_event(
                log,
                "region_retired",
                f"{cloud} {region} retired (missing from change {retired['change_number']})",
                cloud=cloud,
                region=region,
                since=retired["since"],
                change_number=retired["change_number"],
                report=retired.get("report"),
            )
            return
    raise TransientError(f"the region list of {cloud} kept changing under concurrent writers")


def _regressed(seen: Seen, state: dict[str, Any], region: str, *, snapshots: BlobStore, now: str) -> None:
    """One `source_regressed` record per distinct older reply, however many regions and
    workers see it: the first to create the reply's marker logs it."""
    reply = seen.reply
    if not is_older(reply.change_number, state):
        return  # as old as the recorded state (a region missing from it): stale, not a regression
    recorded = recorded_change_number(state)
    doc = {
        "cloud": reply.cloud,
        "change_number": reply.change_number,
        "recorded": str(recorded),
        "region": region,
        "origin": seen.origin,
        "at": now,
        "reply_sha256": reply.digest,
    }
    if snapshots.create(layout.regression_name(reply.cloud, reply.digest), layout.to_json_bytes(doc)):
        log_event(
            log,
            "source_regressed",
            f"{seen.origin} served change {reply.change_number}, older than "
            f"the {recorded} recorded for {region}: nothing reported",
            level=logging.WARNING,
            cloud=reply.cloud,
            seen_change_number=reply.change_number,
            recorded_change_number=str(recorded),
            region=region,
            origin=seen.origin,
            reply_sha256=reply.digest,
        )


def _previous_snapshot(snapshots: BlobStore, state: dict[str, Any], parser: PrefixParser) -> Snapshot | None:
    blob = snapshots.read(state["snapshot"])
    if blob is None:
        # Someone deleted history: start a new baseline rather than report against nothing.
        log_event(
            log,
            "snapshot_missing",
            f"snapshot {state['snapshot']} named by the region state is missing; taking a new baseline",
            level=logging.WARNING,
            snapshot=state["snapshot"],
        )
        return None
    return parse_snapshot(blob.data, state["snapshot"], parser)
