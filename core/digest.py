"""The digest of one producer run for one recipient or channel: the contract and its table. Pure.

A digest gathers the run's change reports (each already filtered for the recipient) into one
document, `servicetags.digest/v1`, the body a signed webhook receives and what the e-mail,
Teams and Slack renderers draw from:

- `region_events`: regions new or retired in this run, stated first everywhere;
- `rows`: one per (region, tag) that changed, with prefix counts and sizes: IPv4 in
  addresses, IPv6 in /64 networks (an IPv6 address count is a 20-digit number nobody reads);
- `missing` / `poisoned`: regions the run did not check by its deadline, or gave up on;
- `impact` (only where the impact step is deployed): per report, the rules of the user's the
  change touches, as the impact step had found them when the digest was built, or `pending`
  when it had not yet (the impact step runs beside the notifier and never holds a report up).

No prefix lists: those stay in the reports (named and linked per region), so a digest of the
biggest week stays a few kilobytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from core.impact_render import restrict, section
from core.report import tag_address_counts

SCHEMA = "servicetags.digest/v1"
SLASH64 = 2**64
IMPACT_ITEMS_MAX = 50  # affected rules per report in the contract; `more` counts the rest


class DigestReport(NamedTuple):
    blob: str  # report blob name
    url: str  # where the stored report is
    report: dict[str, Any]  # the change report, filtered for the recipient
    impact: dict[str, Any] | None = None  # its impact document, when computed (impact/<blob>)


def _row(region: str, tag: dict[str, Any]) -> dict[str, Any]:
    v4_added, v4_removed, v6_added, v6_removed = tag_address_counts(tag)
    return {
        "region": region,
        "tag": tag["id"],
        "status": tag["status"],
        "prefixes_added": len(tag["added_prefixes"]),
        "prefixes_removed": len(tag["removed_prefixes"]),
        "ipv4_added": v4_added,
        "ipv4_removed": v4_removed,
        "ipv6_added": v6_added,
        "ipv6_removed": v6_removed,
    }


def impact_entry(item: DigestReport) -> dict[str, Any]:
    """One report's impact in the digest: `computed` with the rules touched by the tags the
    recipient gets, or `pending`."""
    report = item.report
    base = {"region": report["region"], "report": item.blob}
    if item.impact is None:
        return {**base, "state": "pending"}
    doc = restrict(item.impact, [t["id"] for t in report["tags"]])
    shown = section(doc, limit=IMPACT_ITEMS_MAX)
    s = doc["summary"]
    return {
        **base,
        "state": "computed",
        "line": shown["summary"],
        "summary": {k: s[k] for k in ("rules_checked", "rules_affected", "stale", "by_kind")},
        "items": shown["items"],
        "more": shown["more"],
    }


def impact_member(reports: Sequence[DigestReport]) -> dict[str, Any]:
    entries = [impact_entry(r) for r in reports]
    done = [e for e in entries if e["state"] == "computed"]
    return {
        "rules_affected": sum(e["summary"]["rules_affected"] for e in done),
        "stale": sum(e["summary"]["stale"] for e in done),
        "pending": [e["region"] for e in entries if e["state"] == "pending"],
        "reports": entries,
    }


def build_digest(
    run: dict[str, Any],
    outcomes: dict[str, dict[str, Any]],
    missing: Sequence[str],
    reports: Sequence[DigestReport],
    *,
    closed_by: str,
    with_impact: bool = False,
) -> dict[str, Any]:
    """The digest document. `outcomes` are every region's recorded outcome in the run;
    `reports` only those matching the recipient; `closed_by` is `complete` or `deadline`;
    `with_impact`: the impact step is deployed, so say what it found (or not yet)."""
    changes, rows, events = [], [], []
    ordered = sorted(reports, key=lambda r: (r.report.get("region_event") is None, r.report["region"]))
    for item in ordered:
        report = item.report
        event = report.get("region_event")
        if event in ("added", "removed"):
            events.append({"region": report["region"], "event": event})
        changes.append(
            {
                "region": report["region"],
                "region_event": event,
                "report": item.blob,
                "report_url": item.url,
                "from": report["from"]["changeNumber"],
                "to": report["to"]["changeNumber"],
                "summary": report["summary"],
                "tags": len(report["tags"]),
            }
        )
        rows += [_row(report["region"], tag) for tag in report["tags"]]
    totals = {
        key: sum(r[key] for r in rows)
        for key in (
            "prefixes_added",
            "prefixes_removed",
            "ipv4_added",
            "ipv4_removed",
            "ipv6_added",
            "ipv6_removed",
        )
    }
    poisoned = [
        {"region": region, "reason": doc.get("reason", "")}
        for region, doc in sorted(outcomes.items())
        if doc.get("status") == "poisoned"
    ]
    digest = {
        "schema": SCHEMA,
        "cloud": run["cloud"],
        "run_id": run["run_id"],
        "started_at": run["started_at"],
        "closed_by": closed_by,
        "regions_expected": len(set(outcomes) | set(missing)),
        "regions_checked": len(outcomes),
        "regions_changed": len(changes),
        "region_events": events,
        "missing": sorted(missing),
        "poisoned": poisoned,
        "totals": {**totals, "tags": len(rows)},
        "changes": changes,
        "rows": rows,
    }
    if with_impact and ordered:
        digest["impact"] = impact_member(ordered)
    return digest


def worth_sending(digest: dict[str, Any]) -> bool:
    """A digest with no change and nothing unchecked says nothing: it is not sent."""
    return bool(digest["rows"] or digest["missing"] or digest["poisoned"])


# ---- the words and numbers every rendering shares -----------------------------------------------


def n(value: int) -> str:
    return f"{value:,}"


def v6_64(addresses: int) -> str:
    """IPv6 addresses as /64 networks: whole numbers, or `<1` for less than one /64."""
    whole, rest = divmod(addresses, SLASH64)
    if not rest:
        return n(whole)
    if whole == 0:
        return "<1"
    hundredths = rest * 100 // SLASH64
    return f"{n(whole)}.{hundredths:02d}" if hundredths else n(whole)


def pm(added: str, removed: str) -> str:
    return f"+{added}/-{removed}"


def title(digest: dict[str, Any]) -> str:
    if digest["closed_by"] == "report" and digest["changes"]:
        c = digest["changes"][0]
        return f"Service tags {digest['cloud']}, {c['region']}: change {c['from']} → {c['to']}"
    changed = digest["regions_changed"]
    what = f"{changed} region{'s' if changed != 1 else ''} changed" if changed else "no change matched"
    # A new or retired region is the news of the week: it comes first, in the subject too.
    events = "; ".join(
        f"{'New' if e['event'] == 'added' else 'Retired'} region {e['region']}"
        for e in digest["region_events"]
    )
    lead = f"{events}. " if events else ""
    return f"{lead}Service tags {digest['cloud']}, run {digest['run_id']}: {what}"


def headline(digest: dict[str, Any]) -> list[str]:
    """The first lines of every rendering: region events, then what is missing."""
    lines = []
    for event in digest["region_events"]:
        lines.append(
            f"New region: {event['region']}"
            if event["event"] == "added"
            else f"Retired region: {event['region']}"
        )
    t = digest["totals"]
    if digest["rows"]:
        lines.append(
            f"{digest['regions_changed']} regions, {t['tags']} tag changes; prefixes "
            f"{pm(n(t['prefixes_added']), n(t['prefixes_removed']))}; IPv4 addresses "
            f"{pm(n(t['ipv4_added']), n(t['ipv4_removed']))}; IPv6 /64s "
            f"{pm(v6_64(t['ipv6_added']), v6_64(t['ipv6_removed']))}"
        )
    if digest["missing"]:
        missing = digest["missing"]
        lines.append(f"Not checked by the deadline ({len(missing)}): {', '.join(missing)}")
    if digest["poisoned"]:
        lines.append("Gave up on (poisoned): " + ", ".join(p["region"] for p in digest["poisoned"]))
    return lines


TABLE_HEADER = ("region", "tag", "prefixes +/-", "IPv4 addresses +/-", "IPv6 /64s +/-")


def table_cells(row: dict[str, Any]) -> tuple[str, str, str, str, str]:
    return (
        row["region"],
        row["tag"],
        pm(n(row["prefixes_added"]), n(row["prefixes_removed"])),
        pm(n(row["ipv4_added"]), n(row["ipv4_removed"])),
        pm(v6_64(row["ipv6_added"]), v6_64(row["ipv6_removed"])),
    )


UNITS_NOTE = "IPv4 sizes in addresses; IPv6 sizes in /64 networks (one /64 = 2^64 addresses)."


# ---- the impact section every rendering shares -------------------------------------------------

IMPACT_TITLE = "Impact on your rules"


def impact_headline(digest: dict[str, Any]) -> str | None:
    """One line for the whole run, or None when the digest has no impact member."""
    member = digest.get("impact")
    if not member:
        return None
    computed = [e for e in member["reports"] if e["state"] == "computed"]
    parts = []
    if computed:
        touched = member["rules_affected"]
        regions = sum(1 for e in computed if e["summary"]["rules_affected"])
        stale = f", {member['stale']} stale," if member["stale"] else ""
        parts.append(
            f"{touched} rule{'s' if touched != 1 else ''} touched{stale} in {regions} of "
            f"{len(computed)} region{'s' if len(computed) != 1 else ''} checked"
        )
    if member["pending"]:
        parts.append("not yet computed for " + ", ".join(member["pending"]))
    return f"{IMPACT_TITLE}: " + "; ".join(parts)


def impact_summaries(digest: dict[str, Any]) -> list[str]:
    """One line per report whose impact touches some rule."""
    return [
        e["line"]
        for e in digest.get("impact", {}).get("reports", [])
        if e["state"] == "computed" and e["summary"]["rules_affected"]
    ]


def impact_item_lines(entry: dict[str, Any], item: dict[str, Any]) -> list[str]:
    """One affected rule: a heading line, then what the change does to it."""
    stale = " [stale]" if item["stale"] else ""
    return [
        f"{entry['region']}: {item['kind']} {item['resource']} {item['rule']}{stale}",
        *(f"  {line.strip()}" for line in item["lines"]),
    ]


def impact_items(digest: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(report entry, affected rule) pairs, stale rules first across the run."""
    pairs = [
        (e, item)
        for e in digest.get("impact", {}).get("reports", [])
        if e["state"] == "computed"
        for item in e["items"]
    ]
    pairs.sort(key=lambda pair: not pair[1]["stale"])
    return pairs


def impact_left_out(digest: dict[str, Any]) -> int:
    """Affected rules the contract itself left out (beyond IMPACT_ITEMS_MAX per report)."""
    return sum(e.get("more", 0) for e in digest.get("impact", {}).get("reports", []))


def impact_text(digest: dict[str, Any], *, max_items: int | None = None) -> list[str]:
    """The impact section as plain lines (e-mail, fallbacks); [] without an impact member."""
    head = impact_headline(digest)
    if head is None:
        return []
    pairs = impact_items(digest)
    shown = pairs if max_items is None else pairs[:max_items]
    lines = [head, *(f"  {line}" for line in impact_summaries(digest))]
    for entry, item in shown:
        lines += [f"  {line}" for line in impact_item_lines(entry, item)]
    left = len(pairs) - len(shown) + impact_left_out(digest)
    if left:
        lines.append(f"  … and {left} more affected rule{'s' if left != 1 else ''} not shown here")
    return lines
