"""The impact step: one report BlobCreated event in, one impact blob and log records out.

It runs after the report is written and delivered, from its own queue (fed by its own
Event Grid subscription on the same report events), so a Resource Graph failure never delays
or loses a report: it is retried with the message, then poisoned with the reason.

Every step may run twice or die halfway:
1. the impact blob is named after the report blob (content-derived) in its own container; if
   it exists, the work was done: nothing is logged or written again;
2. one `rule_impact` record per affected rule is logged, then the blob is written create-only.
   A crash between them logs the records again on redelivery, never loses them (alerts may
   see a record twice, as with `change_report`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from core import layout
from core.errors import InvalidPrefixError, PermanentError, SnapshotError
from core.impact import check_report, impact
from core.impact_render import finding_lines, summary_line
from core.ports import BlobStore
from core.rules import RulesError, RuleSet
from runtime.crash_points import crash_point
from runtime.logs import log_event

log = logging.getLogger(__name__)


class Done(NamedTuple):
    name: str  # the impact blob
    written: bool  # False: it existed (a repeated event)
    affected: int


def impact_name(report_blob: str) -> str:
    return report_blob


def handle_report(
    report_blob: str,
    *,
    reports: BlobStore,
    snapshots: BlobStore | None,
    results: BlobStore,
    rules: Callable[[], RuleSet],
) -> Done:
    name = impact_name(report_blob)
    if results.read(name) is not None:
        log_event(log, "impact_exists", f"impact of {report_blob} already written", report=report_blob)
        return Done(name, False, -1)
    blob = reports.read(report_blob)
    if blob is None:
        raise PermanentError(f"report blob {report_blob!r} is gone (deleted after its event was sent)")
    try:
        report = check_report(json.loads(blob.data), report_blob)
    except ValueError as exc:
        raise PermanentError(f"report blob {report_blob!r} is not a change report: {exc}") from None
    try:
        rule_set = rules()
    except RulesError as exc:
        raise PermanentError(f"rules: {exc}") from None
    prefixes = _tag_prefixes(report, snapshots)
    try:
        doc = impact(
            report,
            rule_set.rules,
            resources=rule_set.resources,
            tag_prefixes=prefixes,
            report_name=report_blob,
        )
    except InvalidPrefixError as exc:
        raise PermanentError(f"report blob {report_blob!r} is not a change report: {exc}") from None
    for record in doc["affected"]:
        lines = [line for f in record["findings"] for line in finding_lines(f)]
        log_event(
            log,
            "rule_impact",
            f"{record['kind']} {record['resource_name']} {record['rule']}: {lines[0]}",
            level=logging.WARNING if record["stale"] else logging.INFO,
            report=report_blob,
            cloud=report["cloud"],
            region=report["region"],
            resource_id=record["resource_id"],
            resource_type=record["resource_type"],
            rule=record["rule"],
            kind=record["kind"],
            stale=record["stale"],
            tags=record["tags"],
            findings=lines,
        )
    crash_point("after_impact_records")
    written = results.create(
        name,
        layout.to_json_bytes(doc),
        metadata={
            "cloud": report["cloud"],
            "region": report["region"],
            "rules_affected": str(len(doc["affected"])),
        },
    )
    log_event(
        log,
        "impact_written",
        summary_line(doc),
        report=report_blob,
        impact=name,
        summary={k: v for k, v in doc["summary"].items() if k != "tags_changed"},
    )
    return Done(name, written, len(doc["affected"]))


def _tag_prefixes(report: dict[str, Any], snapshots: BlobStore | None) -> dict[str, frozenset[str]] | None:
    """The current prefixes of the report's tags, from its new snapshot (named by content),
    so copies of tags can be found; None when that snapshot is not at hand."""
    if snapshots is None or report["region"] == "all":
        return None
    sha = report["to"].get("sha256")
    if not isinstance(sha, str):
        return None
    name = layout.snapshot_name(report["cloud"], report["region"], sha)
    blob = snapshots.read(name)
    if blob is None:
        log_event(
            log,
            "impact_snapshot_missing",
            f"snapshot {name} not found: copies of tags are not looked for",
            snapshot=name,
        )
        return None
    from core.snapshot import parse_snapshot

    try:
        snapshot = parse_snapshot(blob.data, name)
    except SnapshotError as exc:
        log_event(
            log,
            "impact_snapshot_unusable",
            f"snapshot {name} unusable ({exc}): copies of tags are not looked for",
            level=logging.WARNING,
            snapshot=name,
        )
        return None
    return {tag.id: tag.prefixes for tag in snapshot.tags.values()}
