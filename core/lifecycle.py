"""A region's life as Microsoft publishes it: it appears, it may vanish, replies may roll back.

Pure decisions over plain data (the region state, the cloud document, what a reply says);
the worker does the I/O. The cloud document (`<cloud>/regions.json`) holds which regions are
watched, when the cloud was first watched, when each region was first seen and which are
retired.

- A cloud's first run is a silent baseline: every region then in the data is a *baseline*
  region. A region first seen later is *new*: its first report lists every tag `added`.
- A region missing from a reply newer than its recorded state is *removed*: one report with
  every tag `removed`, then it is retired (the producer stops enqueuing it). A retired region
  that comes back is new again.
- A reply as old as, or older than, what a region recorded (a rollback, a lagging location)
  changes nothing: the check is *stale*.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, NamedTuple

CLOUD_SCHEMA = "servicetags.regions/v1"  # extended compatibly: `regions` is still the list to enqueue

# What one region check ended in; the worker's one typed result per message (besides poison).
Status = Literal["baseline", "unchanged", "changed", "added", "removed", "stale", "retired"]
RegionEvent = Literal["added", "removed"]

# The content hash of a region with no tags (what a new region had, what a removed one has).
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _number(text: Any) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() else None


def recorded_change_number(state: dict[str, Any]) -> int | None:
    """The newest change number a region's state has seen: its content's, or a later reply's
    with the same content. None when neither is a number (then nothing is called stale)."""
    numbers = [
        n
        for n in (_number(state.get("changeNumber")), _number(state.get("location_change_number")))
        if n is not None
    ]
    return max(numbers) if numbers else None


def is_older(change_number: str, state: dict[str, Any]) -> bool:
    """A reply strictly older than what the region recorded."""
    seen, recorded = _number(change_number), recorded_change_number(state)
    return seen is not None and recorded is not None and seen < recorded


def is_newer(change_number: str, state: dict[str, Any]) -> bool:
    """A reply strictly newer than what the region recorded (non-numbers count as newer: the
    content decides)."""
    seen, recorded = _number(change_number), recorded_change_number(state)
    return seen is None or recorded is None or seen > recorded


class Decision(NamedTuple):
    status: Status
    # What to compare with: "state" (the recorded snapshot), "empty" (a region with no tags
    # at `from_change_number`), or None (nothing: baseline, unchanged, stale, retired).
    previous: Literal["state", "empty"] | None = None
    from_change_number: str | None = None
    region_event: RegionEvent | None = None


def decide(
    *,
    state: dict[str, Any] | None,
    present: bool,
    sha256: str,
    change_number: str,
    cloud: dict[str, Any] | None,
    region: str,
) -> Decision | None:
    """What one check of `region` means. None: the region is unknown (never recorded, not in
    the reply): the message can never succeed."""
    if not present:
        if state is None:
            return None
        if state.get("retired"):
            return Decision("retired")
        if not is_newer(change_number, state):
            return Decision("stale")
        return Decision("removed", "state", region_event="removed")
    if state is None:
        absent_in = new_region_since(cloud, region)
        if absent_in is None:
            return Decision("baseline")
        return Decision("added", "empty", absent_in, "added")
    if is_older(change_number, state):
        return Decision("stale")
    if state.get("retired"):
        if state["sha256"] == sha256:  # a region that returns with no tags at all: nothing to say
            return Decision("retired")
        return Decision("added", "state", region_event="added")
    if state["sha256"] == sha256:
        return Decision("unchanged")
    return Decision("changed", "state")


def new_region_since(cloud: dict[str, Any] | None, region: str) -> str | None:
    """For a region with no state: the change number of the cloud in which it was absent, if
    it is new since the cloud was first watched; None when it belongs to the baseline."""
    if cloud is None:
        return None  # the cloud's first run: everything is baseline
    entry = (cloud.get("first_seen") or {}).get(region)
    if entry is not None and entry.get("baseline"):
        return None
    if entry is not None and entry.get("absent_in"):
        return str(entry["absent_in"])
    # Seen by its own worker before discovery recorded it: the cloud's last recorded number.
    return str(cloud.get("change_number") or "0")


def after_discovery(
    cloud: dict[str, Any] | None, names: list[str], change_number: str, now: str
) -> tuple[dict[str, Any], list[str]]:
    """The cloud document once a reply listing `names` is seen, and the regions to enqueue
    (new, or back from retirement). The first document marks every region as baseline."""
    first = cloud is None
    if (
        cloud is not None
        and _number(change_number) is not None
        and _number(cloud.get("change_number")) is not None
        and int(change_number) < int(cloud["change_number"])
    ):
        return cloud, []  # an older reply (a rollback): it neither adds nor brings back anything
    doc: dict[str, Any] = dict(cloud or {"schema": CLOUD_SCHEMA, "watched_since": now, "regions": []})
    doc.setdefault("schema", CLOUD_SCHEMA)
    doc.setdefault("watched_since", now)  # a v1 document written before the lifecycle existed
    active = set(doc.get("regions") or [])
    retired = dict(doc.get("retired") or {})
    first_seen = dict(doc.get("first_seen") or {})
    previous_number = doc.get("change_number")
    new = sorted(set(names) - active)
    for name in new:
        back = retired.pop(name, None)
        first_seen[name] = {
            "change_number": change_number,
            "at": now,
            "baseline": first,
            "absent_in": None if first else str(back["change_number"] if back else previous_number or "0"),
        }
    doc.update(
        regions=sorted(active | set(names)),
        first_seen=first_seen,
        retired=retired,
        change_number=change_number,
        updated_at=now,
    )
    return doc, new


def after_retirement(
    cloud: dict[str, Any] | None, region: str, *, since: str, change_number: str, report: str | None
) -> dict[str, Any]:
    doc: dict[str, Any] = dict(cloud or {"schema": CLOUD_SCHEMA, "watched_since": since, "regions": []})
    retired = dict(doc.get("retired") or {})
    retired.setdefault(region, {"since": since, "change_number": change_number, "report": report})
    doc.update(regions=sorted(set(doc.get("regions") or []) - {region}), retired=retired, updated_at=since)
    return doc


def is_retired(cloud: dict[str, Any] | None, region: str) -> bool:
    if cloud is None:
        return False
    return region in (cloud.get("retired") or {}) and region not in (cloud.get("regions") or [])
