"""The observed source: a second view of each region, recorded beside the primary's.

The download file is the earliest warning; the API is what NSGs enforce, and it lags the
file by up to four weeks, per location. A worker configured with both reports from the
primary only and records here what the observed source says about the same region: its
change number, whether its content for the region equals the primary's, and since when that
has been so. An observed source that fails does not fail the check: its error is recorded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from core.canonical import content_sha256, tag_digests
from core.errors import ServiceTagsError, UnknownRegionError
from core.lifecycle import EMPTY_SHA256 as EMPTY
from core.messages import RegionMessage
from core.regions import GLOBAL
from runtime.logs import log_event

if TYPE_CHECKING:
    from core.ports import TagSource
    from worker.handler import ParsedReplies

log = logging.getLogger(__name__)


def observe(source: TagSource, message: RegionMessage, replies: ParsedReplies) -> dict[str, Any]:
    """What the observed source says about the message's region, from the region's location."""
    from worker.sources import DEFAULT_LOCATIONS

    location = DEFAULT_LOCATIONS[message.cloud] if message.region == GLOBAL else message.region
    try:
        fetched = source.fetch(message.cloud, location)
        reply = replies.get(fetched.body, fetched.origin)
        code = reply.regions.location_code(message.region)
        if code is None:
            return {
                "origin": fetched.origin,
                "change_number": reply.change_number,
                "sha256": EMPTY,
                "present": False,
            }
        region = replies.region(reply, code)
        return {
            "origin": fetched.origin,
            "change_number": reply.change_number,
            "sha256": content_sha256(region, tag_digests(region)),
            "present": True,
        }
    except (ServiceTagsError, UnknownRegionError) as exc:
        log_event(
            log,
            "observed_source_failed",
            f"observed source failed for {message.cloud} {message.region}: {exc}",
            level=logging.WARNING,
            cloud=message.cloud,
            region=message.region,
            error=str(exc),
        )
        return {"error": str(exc)}


def observed_state(
    state: dict[str, Any] | None, observation: dict[str, Any], primary_sha256: str, now: str
) -> dict[str, Any]:
    """The `observed` member of the region state after this check. `since` is when the
    observed source last started to differ from (or agree with) the primary."""
    before = (state or {}).get("observed") or {}
    if "error" in observation:
        return {**before, "error": observation["error"], "checked_at": now}
    equal = observation["sha256"] == primary_sha256
    since = before.get("since") if before.get("equal") == equal and before.get("since") else now
    return {
        "origin": observation["origin"],
        "change_number": observation["change_number"],
        "sha256": observation["sha256"],
        "equal": equal,
        "since": since,
        "checked_at": now,
    }


def propagated(state: dict[str, Any] | None, observation: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """`last_report_propagated_at`, once the observed source reaches the last report's `to`
    content (recorded once: the first check that sees it)."""
    if not state or not observation or "error" in observation:
        return {}
    target = state.get("last_report_to_sha256")
    if target and not state.get("last_report_propagated_at") and observation.get("sha256") == target:
        return {"last_report_propagated_at": now}
    return {}
