"""Recording each region's outcome under its run, and closing the run when all are in.

Called once per region message, after the region was checked (or poisoned). Two create-only
writes, both repeatable:

1. `runs/<cloud>/<run>/regions/<region>.json`: the outcome (the first one recorded stays);
2. when no expected region lacks an outcome, `runs/<cloud>/<run>/complete.json`. Its
   BlobCreated event is what tells the notifier that the run's digest can go out.

Each worker writes its own outcome before it looks at the others, so of two workers finishing
the last two regions at once, at least the later one sees both; the create-only marker makes
sure only one event is raised. A crash between 1 and 2 is repaired by the redelivered message
(its outcome already exists; the check runs again). A run without a manifest (enqueued by
hand, or by a producer older than run tracking) is not tracked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from core import runs
from core.errors import BadMessage
from core.messages import RegionMessage, parse_region_message
from core.ports import BlobStore, Clock, Message
from runtime.crash_points import crash_point
from runtime.logs import log_event

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def record_outcome(
    message: RegionMessage,
    status: str,
    *,
    store: BlobStore,
    report: str | None = None,
    reason: str | None = None,
    found: Iterable[str] = (),
    clock: Clock = _now,
) -> bool:
    """Record the region's outcome; True when this call completed the run."""
    manifest_blob = store.read(runs.manifest_name(message.cloud, message.run_id))
    if manifest_blob is None:
        return False
    at = clock().isoformat(timespec="milliseconds")  # the bench measures from the last one
    doc = runs.outcome(
        message.region, status, report=report, reason=reason, found=found if message.discover else (), at=at
    )
    store.create(runs.outcome_name(message.cloud, message.run_id, message.region), json.dumps(doc).encode())
    crash_point("after_outcome")
    return close_if_complete(json.loads(manifest_blob.data), store=store, clock=clock)


def close_if_complete(run: dict[str, object], *, store: BlobStore, clock: Clock = _now) -> bool:
    cloud, run_id = str(run["cloud"]), str(run["run_id"])
    prefix = runs.run_prefix(cloud, run_id) + "regions/"
    recorded = {r for r in (runs.region_of_outcome(n) for n in store.names(prefix)) if r}
    outcomes: dict[str, dict[str, object]] = {region: {} for region in recorded}
    if run.get("discover") and "global" in recorded:
        # Only the discovering `global` worker names regions beyond the manifest.
        blob = store.read(runs.outcome_name(cloud, run_id, "global"))
        if blob is not None:
            outcomes["global"] = json.loads(blob.data)
    missing = runs.missing_regions(run, outcomes)
    if missing:
        return False
    doc = {
        "schema": runs.COMPLETE_SCHEMA,
        "cloud": cloud,
        "run_id": run_id,
        "regions": len(outcomes),
        "completed_at": clock().isoformat(timespec="milliseconds"),
    }
    created = store.create(runs.complete_name(cloud, run_id), json.dumps(doc).encode())
    if created:
        log_event(
            log,
            "run_complete",
            f"run {run_id}: all {len(outcomes)} regions checked",
            cloud=cloud,
            run_id=run_id,
            regions=len(outcomes),
        )
    return created


def record_poisoned(message: Message, reason: str, *, store: BlobStore) -> None:
    """The poison path's hook: a region given up on is checked, as far as its run goes."""
    try:
        region_message = parse_region_message(message.content)
    except BadMessage:
        return  # not a region message: no run to tell
    try:
        record_outcome(region_message, "poisoned", store=store, reason=reason)
    except Exception:  # the run's deadline still closes it; poisoning must go on
        log_event(
            log,
            "run_outcome_not_recorded",
            f"could not record the poisoned outcome of {region_message.region}",
            level=logging.WARNING,
            exc_info=True,
            region=region_message.region,
            run_id=region_message.run_id,
        )
