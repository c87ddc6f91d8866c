"""A digest as a Microsoft Teams Adaptive Card and as a Slack Block Kit message. Pure.

Both start with the same lines (new or retired regions, totals, what is missing), then the
table of regions and tags, folded to the channel's limits with a count of what was left out
and a link to each region's full report:

- Teams (Workflows webhook): the whole POST body within `TEAMS_MAX_BYTES` (the service takes
  28 KB; an oversized card is still answered 202 and only fails in the flow's run history, so
  we stay well under). Adaptive Card 1.2, which every Teams client renders; the table is a
  heading per region and a FactSet of its tags (a fifth of the bytes of a ColumnSet per row).
- Slack (incoming webhook): at most 50 blocks, each section's text at most 3,000 characters,
  about 12,000 characters in all (`msg_blocks_too_long` has been seen near 13k), and the
  `text` fallback shown in notifications.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from core.digest import (
    TABLE_HEADER,
    UNITS_NOTE,
    headline,
    impact_headline,
    impact_item_lines,
    impact_items,
    impact_left_out,
    impact_summaries,
    table_cells,
    title,
)

TEAMS_MAX_BYTES = 24 * 1024
SLACK_MAX_BLOCKS = 50
SLACK_MAX_SECTION = 3000
SLACK_MAX_TOTAL = 12000
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
# The impact section may take this share of a message before the table does: which of your own
# rules a change touches matters more than the fifth page of the table.
IMPACT_SHARE = 0.4


def _more_rules(left: int) -> str:
    return f"{left} more affected rule{'s' if left != 1 else ''} not shown here."


def _item_markdown(entry: dict[str, Any], item: dict[str, Any]) -> str:
    head, *rest = impact_item_lines(entry, item)
    return "\n".join([f"**{_md_escape(head)}**", *(f"- {_md_escape(line.strip())}" for line in rest)])


def _size(doc: Any) -> int:
    return len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())


def _md_escape(text: str) -> str:
    # Region and tag names are [A-Za-z0-9.]; anything else is kept out of link syntax.
    return text.replace("[", "(").replace("]", ")")


def _text(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **extra}


def _fact(row: dict[str, Any]) -> dict[str, str]:
    _, tag, prefixes, v4, v6 = table_cells(row)
    return {"title": tag, "value": f"prefixes {prefixes} · IPv4 {v4} · IPv6 /64s {v6}"}


def _region_blocks(region: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        _text(region, weight="Bolder", spacing="Medium"),
        {"type": "FactSet", "facts": [_fact(r) for r in rows]},
    ]


def _links(digest: dict[str, Any]) -> list[str]:
    return [f"[{_md_escape(c['region'])}]({c['report_url']})" for c in digest["changes"] if c["report_url"]]


def _teams_impact(digest: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """The impact section as one Container within `budget` bytes, or None without impact."""
    head = impact_headline(digest)
    if head is None:
        return None
    items: list[dict[str, Any]] = [_text(head, weight="Bolder")]
    items += [_text(line, size="Small") for line in impact_summaries(digest)]
    container = {"type": "Container", "separator": True, "spacing": "Medium", "items": items}
    pairs = impact_items(digest)
    shown = 0
    for entry, item in pairs:
        block = _text(_item_markdown(entry, item), size="Small")
        if _size(container) + _size(block) + 160 > budget:
            break
        items.append(block)
        shown += 1
    left = len(pairs) - shown + impact_left_out(digest)
    if left:
        items.append(_text(_more_rules(left), weight="Bolder", size="Small"))
    return container


def teams_payload(digest: dict[str, Any], *, max_bytes: int = TEAMS_MAX_BYTES) -> dict[str, Any]:
    """The Workflows webhook body: one message with one Adaptive Card, within `max_bytes`."""
    head = [_text(title(digest), weight="Bolder", size="Medium")]
    head += [_text(line) for line in headline(digest)]
    body: list[dict[str, Any]] = [*head]
    if digest["rows"]:
        body.append(
            _text(
                f"Per region and tag: prefixes, IPv4 addresses and IPv6 /64s added/removed. {UNITS_NOTE}",
                isSubtle=True,
                size="Small",
            )
        )

    def payload(blocks: list[dict[str, Any]]) -> dict[str, Any]:
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.2",
            "body": blocks,
        }
        return {
            "type": "message",
            "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
        }

    links = _links(digest)
    tail = [_text("Full reports: " + ", ".join(links), size="Small")] if links else []
    by_region: dict[str, list[dict[str, Any]]] = {}
    for row in digest["rows"]:
        by_region.setdefault(row["region"], []).append(row)
    # Reserve room for the fold note, the links and the impact (up to its share), then add
    # regions (then tags) while they fit.
    full_impact = _teams_impact(digest, max_bytes)
    reserve = min(_size(full_impact), int(max_bytes * IMPACT_SHARE)) if full_impact else 0
    budget = max_bytes - _size(payload(body + tail)) - 200 - reserve
    shown = 0
    for region, rows in by_region.items():
        heading, facts = _region_blocks(region, rows)
        cost = _size(heading) + _size(facts) + 2
        while facts["facts"] and cost > budget:
            facts["facts"].pop()
            cost = _size(heading) + _size(facts) + 2
        if not facts["facts"]:
            break
        body += [heading, facts]
        budget -= cost
        shown += len(facts["facts"])
        if len(facts["facts"]) < len(rows):
            break
    left = len(digest["rows"]) - shown
    if left:
        body.append(
            _text(
                f"{left} more tag change{'s' if left != 1 else ''} not shown here; "
                "they are in the full reports.",
                weight="Bolder",
            )
        )
    if full_impact is not None:
        impact = _teams_impact(digest, max_bytes - _size(payload(body + tail)) - 100)
        assert impact is not None
        body.append(impact)
    if tail and _size(payload(body + tail)) > max_bytes:
        # Very many regions: the links alone would not fit; name how many are left out.
        kept, text = [], "Full reports: "
        for link in links:
            if _size(payload(body)) + len(text) + len(link) + 120 > max_bytes:
                break
            kept.append(link)
            text = "Full reports: " + ", ".join(kept)
        tail = [_text(f"{text} (and {len(links) - len(kept)} more regions)", size="Small")]
    return payload(body + tail)


def _code_chunks(lines: list[str], limit: int) -> list[str]:
    """Table lines in ``` blocks of at most `limit` characters each."""
    chunks, current = [], ""
    for line in lines:
        if current and len(current) + len(line) + 1 + 6 > limit:
            chunks.append(f"```{current}```")
            current = ""
        current += ("\n" if current else "") + line
    if current:
        chunks.append(f"```{current}```")
    return chunks


def table_lines(digest: dict[str, Any]) -> list[str]:
    """The table as fixed-width text (Slack code blocks and the plain-text e-mail)."""
    cells = [TABLE_HEADER, *(table_cells(r) for r in digest["rows"])]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_HEADER))]

    def line(row: tuple[str, ...]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        padded = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)
        return "  ".join(padded).rstrip()

    return [line(row) for row in cells]


def _slack_escape(text: str) -> str:
    # Slack mrkdwn: only &, < and > need escaping (https://api.slack.com/reference/surfaces/formatting).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Chunk(NamedTuple):
    text: str
    rules: int  # affected rules in it


def _slack_impact_chunks(digest: dict[str, Any], limit: int) -> list[_Chunk]:
    """The impact section as mrkdwn texts of at most `limit` characters: the first holds the
    heading and per-region lines, then whole rules (a rule too long for one is cut)."""
    head = [
        f"*{_slack_escape(impact_headline(digest) or '')}*",
        *(_slack_escape(line) for line in impact_summaries(digest)),
    ]
    chunks = [_Chunk("\n".join(head)[:limit], 0)]
    current, count = "", 0
    for entry, item in impact_items(digest):
        first, *rest = impact_item_lines(entry, item)
        text = "\n".join([f"*{_slack_escape(first)}*", *(f"• {_slack_escape(r.strip())}" for r in rest)])
        text = text[:limit]
        if current and len(current) + len(text) + 2 > limit:
            chunks.append(_Chunk(current, count))
            current, count = "", 0
        current += ("\n\n" if current else "") + text
        count += 1
    if current:
        chunks.append(_Chunk(current, count))
    return chunks


def _slack_impact_blocks(
    digest: dict[str, Any], chunks: list[_Chunk], *, blocks: int, used: int, max_blocks: int, max_total: int
) -> list[dict[str, Any]]:
    """The impact chunks that fit after `blocks` blocks and `used` characters, and a fold note."""
    out: list[dict[str, Any]] = []
    shown = 0
    for chunk, count in chunks:
        if blocks + len(out) + 2 >= max_blocks or used + len(chunk) + 200 > max_total:
            break
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
        used += len(chunk) + 60
        shown += count
    left = len(impact_items(digest)) - shown + impact_left_out(digest)
    if left:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _more_rules(left)}]})
    return out


def slack_payload(
    digest: dict[str, Any],
    *,
    max_blocks: int = SLACK_MAX_BLOCKS,
    max_section: int = SLACK_MAX_SECTION,
    max_total: int = SLACK_MAX_TOTAL,
) -> dict[str, Any]:
    """The incoming-webhook body: fallback `text` plus Block Kit blocks within Slack's limits."""
    fallback = title(digest)
    head_lines = headline(digest)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": fallback[:150], "emoji": False}}
    ]
    if head_lines:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(head_lines)[:max_section]}}
        )
    links = _links(digest)
    link_text = ""
    if links:
        link_text = "Full reports: " + ", ".join(
            f"<{c['report_url']}|{c['region']}>" for c in digest["changes"] if c["report_url"]
        )
        if len(link_text) > max_section:
            link_text = link_text[: max_section - 40].rsplit(",", 1)[0] + ", … (more in the digest)"
    impact_head = impact_headline(digest)
    impact_chunks = _slack_impact_chunks(digest, max_section) if impact_head else []
    impact_blocks = min(len(impact_chunks), 8)
    impact_chars = min(sum(len(c.text) for c in impact_chunks), int(max_total * IMPACT_SHARE))
    reserved = 3 + impact_blocks + (1 if impact_head else 0)  # units, fold, links, impact + its fold note
    used = sum(len(json.dumps(b)) for b in blocks) + len(link_text) + 400 + impact_chars
    lines = table_lines(digest) if digest["rows"] else []
    shown_rows = 0
    for chunk in _code_chunks(lines, max_section):
        if len(blocks) + reserved >= max_blocks or used + len(chunk) > max_total:
            break
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
        used += len(chunk) + 60
        shown_rows += chunk.count("\n") + 1
    if lines:
        shown_rows -= 1  # the header line
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": UNITS_NOTE}]})
        left = len(digest["rows"]) - shown_rows
        if left > 0:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": f"*{left} more tag change{'s' if left != 1 else ''} not shown here*; "
                        "they are in the full reports.",
                    },
                }
            )
    if impact_head:
        blocks += _slack_impact_blocks(
            digest,
            impact_chunks,
            blocks=len(blocks),
            used=used - impact_chars,
            max_blocks=max_blocks,
            max_total=max_total,
        )
    if link_text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link_text}})
    text = fallback + (". " + " ".join(head_lines) if head_lines else "")
    if impact_head:
        text += ". " + impact_head
    return {"text": text[:3000], "blocks": blocks}
