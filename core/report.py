"""The change report: the machine contract (JSON) built from a diff.

Renderers (text, Markdown, HTML, e-mail) take the report *document*, never the diff, so the
notifier renders exactly what was stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.diff import TagChange

SCHEMA = "servicetags.change-report/v1"

SUMMARY_KEYS = (
    "tags_added",
    "tags_removed",
    "tags_changed",
    "tags_metadata_only",
    "prefixes_added",
    "prefixes_removed",
    "ipv4_addresses_added",
    "ipv4_addresses_removed",
    "ipv6_addresses_added",
    "ipv6_addresses_removed",
)


def tag_entry(change: TagChange) -> dict[str, Any]:
    return {
        "id": change.id,
        "system_service": change.system_service,
        "region": change.region,
        "status": change.status,
        "change_number": {"from": change.change_number_from, "to": change.change_number_to},
        "added_prefixes": change.added_prefixes,
        "removed_prefixes": change.removed_prefixes,
        "net_added": change.net_added,
        "net_removed": change.net_removed,
        "metadata_changes": change.metadata_changes,
        # Addresses newly covered / no longer covered (the net lists), per family: what
        # filters and messages size a change by, so no reader parses the prefixes again.
        "ipv4_addresses_added": change.ipv4_added,
        "ipv4_addresses_removed": change.ipv4_removed,
        "ipv6_addresses_added": change.ipv6_added,
        "ipv6_addresses_removed": change.ipv6_removed,
    }


def address_counts(cidrs: Iterable[str]) -> tuple[int, int]:
    """(IPv4, IPv6) addresses in `cidrs`. The report's net lists are collapsed, so no overlap."""
    import ipaddress  # not at import: `servicetags diff` never counts, and starts faster without it

    v4 = v6 = 0
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr)
        if network.version == 4:
            v4 += network.num_addresses
        else:
            v6 += network.num_addresses
    return v4, v6


def tag_address_counts(tag: dict[str, Any]) -> tuple[int, int, int, int]:
    """(IPv4 added, IPv4 removed, IPv6 added, IPv6 removed) addresses of a report's tag entry:
    its own counts, or, in a report written before they were part of the contract, counted
    from its net lists."""
    if "ipv4_addresses_added" in tag:
        return (
            tag["ipv4_addresses_added"],
            tag["ipv4_addresses_removed"],
            tag["ipv6_addresses_added"],
            tag["ipv6_addresses_removed"],
        )
    v4_added, v6_added = address_counts(tag["net_added"])
    v4_removed, v6_removed = address_counts(tag["net_removed"])
    return v4_added, v4_removed, v6_added, v6_removed


def summarise(tags: Iterable[dict[str, Any]]) -> dict[str, int]:
    """The report summary of these tag entries (a whole report's, or those a filter kept)."""
    summary = dict.fromkeys(SUMMARY_KEYS, 0)
    status_key = {
        "added": "tags_added",
        "removed": "tags_removed",
        "changed": "tags_changed",
        "metadata": "tags_metadata_only",
    }
    for tag in tags:
        summary[status_key[tag["status"]]] += 1
        summary["prefixes_added"] += len(tag["added_prefixes"])
        summary["prefixes_removed"] += len(tag["removed_prefixes"])
        v4_added, v4_removed, v6_added, v6_removed = tag_address_counts(tag)
        summary["ipv4_addresses_added"] += v4_added
        summary["ipv4_addresses_removed"] += v4_removed
        summary["ipv6_addresses_added"] += v6_added
        summary["ipv6_addresses_removed"] += v6_removed
    return summary


REGION_EVENTS = ("added", "removed")


def with_region_event(report: dict[str, Any], event: str) -> dict[str, Any]:
    """The report of a region that appeared (every tag `added`) or vanished (every tag
    `removed`), marked so. The field is optional in the v1 contract: ordinary reports do not
    carry it, so they stay byte for byte what they were."""
    if event not in REGION_EVENTS:
        raise ValueError(f"region_event {event!r} is not one of {REGION_EVENTS}")
    if any(tag["status"] != event for tag in report["tags"]):
        raise ValueError(f"a region {event} report lists only {event} tags")
    return {**report, "region_event": event}


def region_event_line(report: dict[str, Any]) -> str | None:
    """What a new or removed region's report says first (subject and body), or None."""
    event = report.get("region_event")
    if event is None:
        return None
    tags = len(report["tags"])
    prefixes = report["summary"][f"prefixes_{event}"]
    if event == "added":
        return (
            f"New region {report['region']} in {report['cloud']}: {tags} tags, "
            f"{prefixes:,} prefixes, all added"
        )
    return (
        f"Region {report['region']} removed from {report['cloud']}: {tags} tags, "
        f"{prefixes:,} prefixes, all removed"
    )


def build_report(
    *,
    cloud: str,
    region: str,
    old_change_number: str,
    old_sha256: str,
    new_change_number: str,
    new_sha256: str,
    changes: list[TagChange],
) -> dict[str, Any]:
    entries = [tag_entry(c) for c in changes]
    return {
        "schema": SCHEMA,
        "cloud": cloud,
        "region": region,
        "from": {"changeNumber": old_change_number, "sha256": old_sha256},
        "to": {"changeNumber": new_change_number, "sha256": new_sha256},
        "summary": summarise(entries),
        "tags": entries,
    }
