"""Human renderings of a change report document: one-line summary, plain text, Markdown.

All take the report as stored (the JSON contract), so every channel shows the same facts.
"""

from __future__ import annotations

import json
from typing import Any

Report = dict[str, Any]


def to_json(report: Report) -> str:
    """Exactly `json.dumps(report, indent=2, ensure_ascii=False)`, a few times faster: with
    an indent, `json` encodes every one of the report's thousands of prefixes in Python."""
    return _indented(report, "\n") + "\n"


_string = json.encoder.encode_basestring  # in C, as json.dumps(..., ensure_ascii=False) has it


def _indented(value: Any, newline: str) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)
    inner = newline + "  "
    if kind is dict and value:
        items = [
            f"{_string(k if type(k) is str else json.dumps(k))}: {_indented(v, inner)}"
            for k, v in value.items()
        ]
        return "{" + inner + ("," + inner).join(items) + newline + "}"
    if (kind is list or kind is tuple) and value:
        if all(type(v) is str for v in value):
            return "[" + inner + ("," + inner).join(map(_string, value)) + newline + "]"
        return "[" + inner + ("," + inner).join([_indented(v, inner) for v in value]) + newline + "]"
    return json.dumps(value)  # numbers, true, false, null, {} and []


def _n(value: int) -> str:
    return f"{value:,}"


def _span(report: Report) -> str:
    return f"change {report['from']['changeNumber']} → {report['to']['changeNumber']}"


def _counts(summary: dict[str, int]) -> list[str]:
    parts = []
    for key, word in (
        ("tags_added", "added"),
        ("tags_removed", "removed"),
        ("tags_changed", "changed"),
        ("tags_metadata_only", "metadata only"),
    ):
        if summary[key]:
            parts.append(f"{summary[key]} {word}")
    return parts


def summary_line(report: Report) -> str:
    """E.g. `francecentral: 3 tags changed, +12/-1 prefixes, IPv4 +4,096/-256 (change 370 → 371)`."""
    s = report["summary"]
    where = f"{report['cloud']} {report['region']}" if report["cloud"] != "Public" else report["region"]
    if not report["tags"]:
        return f"{where}: no change ({_span(report)})"
    parts = [", ".join(_counts(s)) + (" tag" if len(report["tags"]) == 1 else " tags")]
    if s["prefixes_added"] or s["prefixes_removed"]:
        parts.append(f"+{_n(s['prefixes_added'])}/-{_n(s['prefixes_removed'])} prefixes")
    for v in (4, 6):
        gained, lost = s[f"ipv{v}_addresses_added"], s[f"ipv{v}_addresses_removed"]
        if gained or lost:
            parts.append(f"IPv{v} +{_n(gained)}/-{_n(lost)} addresses")
    return f"{where}: {'; '.join(parts)} ({_span(report)})"


def _tag_heading(tag: dict[str, Any]) -> str:
    cn = tag["change_number"]
    numbers = f"{cn['from'] or 'none'} → {cn['to'] or 'none'}"
    return f"{tag['id']} [{tag['status']}] (tag change {numbers})"


def _metadata_lines(tag: dict[str, Any]) -> list[str]:
    return [
        f"{k}: {json.dumps(v['from'])} → {json.dumps(v['to'])}" for k, v in tag["metadata_changes"].items()
    ]


def to_text(report: Report) -> str:
    s = report["summary"]
    lines = [
        f"Service tag changes, {report['cloud']} cloud, region {report['region']}",
        f"From change {report['from']['changeNumber']} (sha256 {report['from']['sha256'][:12]}) "
        f"to {report['to']['changeNumber']} (sha256 {report['to']['sha256'][:12]})",
        summary_line(report),
        "",
    ]
    if not report["tags"]:
        lines.append("No tag changed.")
    for tag in report["tags"]:
        lines.append(_tag_heading(tag))
        lines += [f"  + {p}" for p in tag["added_prefixes"]]
        lines += [f"  - {p}" for p in tag["removed_prefixes"]]
        if tag["status"] == "changed":
            lines.append(f"  net added:   {', '.join(tag['net_added']) or 'none'}")
            lines.append(f"  net removed: {', '.join(tag['net_removed']) or 'none'}")
        lines += [f"  {line}" for line in _metadata_lines(tag)]
        lines.append("")
    lines.append(
        f"Totals: {s['prefixes_added']} prefixes added, {s['prefixes_removed']} removed; "
        f"IPv4 addresses +{_n(s['ipv4_addresses_added'])}/-{_n(s['ipv4_addresses_removed'])}; "
        f"IPv6 addresses +{_n(s['ipv6_addresses_added'])}/-{_n(s['ipv6_addresses_removed'])}"
    )
    return "\n".join(lines) + "\n"


def _md_list(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    return [f"- {title}: " + ", ".join(f"`{p}`" for p in items)]


def to_markdown(report: Report) -> str:
    s = report["summary"]
    lines = [
        f"# Service tag changes: {report['region']} ({report['cloud']})",
        "",
        f"{summary_line(report)}",
        "",
        "| | added | removed |",
        "|---|---:|---:|",
        f"| tags | {s['tags_added']} | {s['tags_removed']} |",
        f"| prefixes | {s['prefixes_added']} | {s['prefixes_removed']} |",
        f"| IPv4 addresses | {_n(s['ipv4_addresses_added'])} | {_n(s['ipv4_addresses_removed'])} |",
        f"| IPv6 addresses | {_n(s['ipv6_addresses_added'])} | {_n(s['ipv6_addresses_removed'])} |",
        "",
        f"Tags changed: {s['tags_changed']}; metadata only: {s['tags_metadata_only']}. "
        f"From `{report['from']['sha256'][:12]}` to `{report['to']['sha256'][:12]}`.",
    ]
    for tag in report["tags"]:
        lines += ["", f"## {_tag_heading(tag)}", ""]
        lines += _md_list("added", tag["added_prefixes"])
        lines += _md_list("removed", tag["removed_prefixes"])
        if tag["status"] == "changed":
            lines += _md_list("net added", tag["net_added"])
            lines += _md_list("net removed", tag["net_removed"])
        lines += [f"- {line}" for line in _metadata_lines(tag)]
    return "\n".join(lines) + "\n"


RENDERERS = {"json": to_json, "md": to_markdown, "text": to_text}
