"""Renderings of an impact document (core/impact.py): text, Markdown, HTML and a plain-data
section for other channels. Pure.

For the digest, the channels and the web report pages: `section(doc)` gives the facts as
plain data (a title, a summary line and one item per affected rule, each with short lines),
so every channel lays out the same facts its own way; `to_markdown`, `to_text` and
`to_html_fragment` render the whole section. `summary_line(doc)` is one line for a log
record or a notification's subject.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from html import escape
from typing import Any

Doc = dict[str, Any]


def summary_line(doc: Doc) -> str:
    s, r = doc["summary"], doc["report"]
    span = f"change {r['from']} → {r['to']}"
    if not s["rules_affected"]:
        return f"{r['region']}: none of {s['rules_checked']:,} rules touched ({span})"
    kinds = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in s["by_kind"].items())
    stale = f", {s['stale']} stale" if s["stale"] else ""
    touched = f"{s['rules_affected']} of {s['rules_checked']:,} rules touched"
    return f"{r['region']}: {touched} ({kinds}){stale} ({span})"


def _short(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def finding_lines(finding: dict[str, Any]) -> list[str]:
    """What one finding says, in short lines."""
    kind, field = finding["type"], finding["field"]
    if kind == "tag":
        parts = []
        if finding["gained"]:
            parts.append(f"gained {_short(finding['gained'])}")
        if finding["lost"]:
            parts.append(f"lost {_short(finding['lost'])}")
        status = "" if finding["status"] == "changed" else f" ({finding['status']})"
        return [f"{field} names {finding['written']}{status}: " + "; ".join(parts)]
    if kind == "literal":
        lines = []
        for item in finding["removed_from"]:
            lines.append(f"{field} {finding['prefix']} is stale: {_short(item['ranges'])} left {item['tag']}")
        for item in finding["added_to"]:
            lines.append(
                f"{field} {finding['prefix']} overlaps {_short(item['ranges'])}, new in {item['tag']}"
            )
        return lines
    if kind == "mirror":
        lines = [f"{field} copies {finding['tag']} ({finding['inside']} of {finding['of']} ranges inside it)"]
        if finding["add"]:
            lines.append(f"  add {_short(finding['add'])}")
        if finding["remove"]:
            lines.append(f"  remove {_short(finding['remove'])}")
        lines.append(f"  hint: {finding['hint']}")
        return lines
    if kind == "ip_group":
        inner = [line for f in finding["findings"] for line in finding_lines(f)]
        return [
            f"{field} references IP Group {finding['group_name']}" + (" (stale)" if finding["stale"] else "")
        ] + [f"  {line}" for line in inner]
    return [json.dumps(finding)]


def restrict(doc: Doc, tags: Collection[str]) -> Doc:
    """The impact as seen by someone who gets only `tags` of the report (a recipient's filters):
    the rules touched through those tags, the summary counted again."""
    wanted = set(tags)
    affected = [a for a in doc["affected"] if not a["tags"] or wanted.intersection(a["tags"])]
    if len(affected) == len(doc["affected"]):
        return doc
    kinds = Counter(a["kind"] for a in affected)
    summary = {
        **doc["summary"],
        "rules_affected": len(affected),
        "stale": sum(1 for a in affected if a["stale"]),
        "by_kind": dict(sorted(kinds.items())),
    }
    return {**doc, "summary": summary, "affected": affected}


def section(doc: Doc, *, limit: int | None = None) -> dict[str, Any]:
    """The impact as plain data: {"title", "summary", "items": [{"resource", "resource_id",
    "kind", "rule", "stale", "tags", "lines"}], "more"}; `limit` caps the items (stale first)."""
    items = [
        {
            "resource": a["resource_name"],
            "resource_id": a["resource_id"],
            "kind": a["kind"],
            "rule": a["rule"],
            "stale": a["stale"],
            "tags": a["tags"],
            "lines": [line for f in a["findings"] for line in finding_lines(f)],
        }
        for a in doc["affected"]
    ]
    items.sort(key=lambda item: not item["stale"])  # stable: stale first, else in document order
    shown = items if limit is None else items[:limit]
    return {
        "title": "Impact on your rules",
        "summary": summary_line(doc),
        "items": shown,
        "more": len(items) - len(shown),
    }


def to_text(doc: Doc) -> str:
    s = section(doc)
    lines = [s["title"], summary_line(doc), ""]
    for item in s["items"]:
        lines.append(
            f"{item['kind']} {item['resource']} {item['rule']}" + (" [stale]" if item["stale"] else "")
        )
        lines.append(f"  {item['resource_id']}")
        lines += [f"  {line}" for line in item["lines"]]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def to_markdown(doc: Doc) -> str:
    s = section(doc)
    lines = [f"## {s['title']}", "", s["summary"]]
    for item in s["items"]:
        stale = " **stale**" if item["stale"] else ""
        lines += [
            "",
            f"### {item['kind']} `{item['resource']}` `{item['rule']}`{stale}",
            "",
            f"`{item['resource_id']}`",
            "",
        ]
        lines += [f"{'  ' if line.startswith('  ') else ''}- {line.strip()}" for line in item["lines"]]
    return "\n".join(lines) + "\n"


def to_html_fragment(doc: Doc) -> str:
    """A `<section>` with escaped text only (no scripts, no styles): safe to embed in a page."""
    s = section(doc)
    out = [f'<section class="impact"><h2>{escape(s["title"])}</h2><p>{escape(s["summary"])}</p>']
    if s["items"]:
        out.append("<ul>")
        for item in s["items"]:
            stale = ' <strong class="stale">stale</strong>' if item["stale"] else ""
            out.append(
                f"<li><code>{escape(item['resource'])}</code> {escape(item['kind'])} "
                f"<code>{escape(item['rule'])}</code>{stale}<ul>"
            )
            out += [f"<li>{escape(line.strip())}</li>" for line in item["lines"]]
            out.append("</ul></li>")
        out.append("</ul>")
    out.append("</section>")
    return "".join(out) + "\n"


def to_json(doc: Doc) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"json": to_json, "md": to_markdown, "text": to_text}
