"""A producer run and its progress, as blobs in the `runs` container. Pure: names and documents.

runs/<cloud>/<run id>/manifest.json          the producer: regions enqueued, start, deadline
runs/<cloud>/<run id>/regions/<region>.json  a worker: that region's outcome in this run
runs/<cloud>/<run id>/complete.json          the worker that saw every region checked

Every blob is written create-only, so a rerun or a second worker changes nothing. The
`complete.json` blob exists only once every expected region has an outcome; its BlobCreated
event tells the notifier the run's digest can go out. A run that never completes (a region
still retrying) is closed by its deadline message instead (queue `run-deadlines`, enqueued by
the producer with a visibility delay equal to the deadline).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

MANIFEST_SCHEMA = "servicetags.run/v1"
OUTCOME_SCHEMA = "servicetags.run-region/v1"
COMPLETE_SCHEMA = "servicetags.run-complete/v1"
DEADLINE_SCHEMA = "servicetags.run-deadline/v1"
DEFAULT_DEADLINE = 3600  # seconds after the run starts
OUTCOMES = ("baseline", "unchanged", "changed", "added", "removed", "stale", "retired", "poisoned")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunError(ValueError):
    """A run id, manifest or deadline message that cannot be used."""


def run_key(run_id: str) -> str:
    """The run id as a blob name segment: any id works (`--run-id` is free text), and the
    producer and every worker derive the same segment from it."""
    if _RUN_ID.match(run_id):
        return run_id
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:60] or "run"
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:12]}"


def run_prefix(cloud: str, run_id: str) -> str:
    return f"{cloud}/{run_key(run_id)}/"


def manifest_name(cloud: str, run_id: str) -> str:
    return f"{run_prefix(cloud, run_id)}manifest.json"


def outcome_name(cloud: str, run_id: str, region: str) -> str:
    return f"{run_prefix(cloud, run_id)}regions/{region}.json"


def complete_name(cloud: str, run_id: str) -> str:
    return f"{run_prefix(cloud, run_id)}complete.json"


def parse_complete_name(blob_name: str) -> tuple[str, str] | None:
    """(cloud, run key) when `blob_name` is a run's complete marker, else None."""
    parts = blob_name.split("/")
    if len(parts) == 3 and parts[2] == "complete.json" and parts[0] and _RUN_ID.match(parts[1]):
        return parts[0], parts[1]
    return None


def manifest(
    cloud: str,
    run_id: str,
    regions: Iterable[str],
    *,
    started_at: str,
    deadline_at: str,
    deadline_seconds: int,
    discover: bool,
) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "cloud": cloud,
        "run_id": run_id,
        "regions": sorted(set(regions)),
        "started_at": started_at,
        "deadline_at": deadline_at,
        "deadline_seconds": deadline_seconds,
        "discover": discover,
    }


def outcome(
    region: str,
    status: str,
    *,
    report: str | None = None,
    reason: str | None = None,
    region_event: str | None = None,
    found: Iterable[str] = (),
    at: str,
) -> dict[str, Any]:
    """A region's outcome. `found` (discovery runs only): every region in the data, which the
    `global` worker enqueues when new, so the run waits for them too."""
    if status not in OUTCOMES:
        raise RunError(f"outcome {status!r} is not one of {', '.join(OUTCOMES)}")
    doc: dict[str, Any] = {
        "schema": OUTCOME_SCHEMA,
        "region": region,
        "status": status,
        "report": report,
        "at": at,
    }
    if reason:
        doc["reason"] = reason[:500]
    if region_event:
        doc["region_event"] = region_event
    found = sorted(set(found))
    if found:
        doc["found"] = found
    return doc


def expected_regions(run: dict[str, Any], outcomes: dict[str, dict[str, Any]]) -> set[str]:
    """Regions the run waits for: the producer's list plus, in a discovery run, every region a
    worker found in the data (enqueued with the same run id)."""
    expected = set(run["regions"])
    if run.get("discover"):
        for doc in outcomes.values():
            expected.update(doc.get("found", ()))
    return expected


def missing_regions(run: dict[str, Any], outcomes: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(expected_regions(run, outcomes) - set(outcomes))


def region_of_outcome(blob_name: str) -> str | None:
    head, _, leaf = blob_name.rpartition("/regions/")
    return leaf[:-5] if head and leaf.endswith(".json") else None


class Deadline(NamedTuple):
    cloud: str
    run_id: str

    def to_json(self) -> str:
        return json.dumps(
            {"schema": DEADLINE_SCHEMA, "cloud": self.cloud, "run_id": self.run_id}, separators=(",", ":")
        )


def parse_deadline(doc: Any) -> Deadline | None:
    """The deadline message in a decoded queue message, None when it is something else."""
    if not isinstance(doc, dict) or doc.get("schema") != DEADLINE_SCHEMA:
        return None
    cloud, run_id = doc.get("cloud"), doc.get("run_id")
    if not isinstance(cloud, str) or not cloud or not isinstance(run_id, str):
        raise RunError("run deadline message needs cloud and run_id strings")
    if not run_id:
        raise RunError("run deadline message has an empty run_id")
    return Deadline(cloud, run_id)
