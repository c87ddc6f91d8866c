"""Atom feeds (RFC 4287) of the change reports. Pure.

A feed has one id, title and updated, an author and a self link; each entry one id, title,
updated, a summary and an alternate link to the report's page. Entry ids are tag: URIs made
of the report's blob name, which is derived from the region and both snapshots' content: an
entry keeps its id for ever, wherever the site is served from. `updated` is the date of the
change (not the time of publishing), so republishing changes nothing.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from web.pages import report_page_name

TAG_AUTHORITY = "tag:servicetags-watch,2025:"
MAX_ENTRIES = 100


def rfc3339(date: str) -> str:
    """`2025-01-14` or `2025-01-14T06:00:00Z` -> a full RFC 3339 time."""
    if not date:
        return "1970-01-01T00:00:00Z"
    return date if "T" in date else f"{date}T00:00:00Z"


def entry_id(report_name: str) -> str:
    return TAG_AUTHORITY + report_name


def atom_feed(
    *, cloud: str, region: str | None, reports: list[list[Any]], dates: dict[str, str], base_url: str
) -> str:
    """`reports` are index rows [name, region, from, to, added, removed, tags]; newest first
    in the feed. `base_url` ends with '/' (the site root), or is '' for relative links."""
    scope = f"{cloud} {region}" if region else cloud
    feed_path = f"{cloud}/feeds/{region}.atom" if region else f"{cloud}/feed.atom"
    chosen = sorted(reports, key=lambda r: (rfc3339(dates.get(r[3], "")), r[0]), reverse=True)[:MAX_ENTRIES]
    updated = rfc3339(dates.get(chosen[0][3], "")) if chosen else "1970-01-01T00:00:00Z"
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"  <id>{escape(TAG_AUTHORITY + feed_path)}</id>",
        f"  <title>Azure service tag changes: {escape(scope)}</title>",
        f"  <updated>{updated}</updated>",
        "  <author><name>servicetags-watch</name></author>",
        f'  <link rel="self" type="application/atom+xml" href={quoteattr(base_url + feed_path)}/>',
        f'  <link rel="alternate" type="text/html" href={quoteattr(base_url + cloud + "/index.html")}/>',
        "  <generator>servicetags-watch</generator>",
    ]
    for name, reg, old, new, added, removed, tags in chosen:
        when = rfc3339(dates.get(new, ""))
        plural = "s" if tags != 1 else ""
        title = f"{reg}: change {old} → {new}, {tags} tag{plural}, +{added}/-{removed} prefixes"
        out += [
            "  <entry>",
            f"    <id>{escape(entry_id(name))}</id>",
            f"    <title>{escape(title)}</title>",
            f"    <updated>{when}</updated>",
            f'    <link rel="alternate" type="text/html" '
            f"href={quoteattr(base_url + report_page_name(cloud, name))}/>",
            f"    <category term={quoteattr(reg)}/>",
            f"    <summary>{escape(title)} (report {escape(name)})</summary>",
            "  </entry>",
        ]
    out.append("</feed>")
    return "\n".join(out) + "\n"
