"""The e-mail for one change report and one recipient: subject, plain text, HTML, JSON attachment.

Pure: builds an `EmailMessage` (and the equivalent Communication Services message dict) from
the report document as stored, with no I/O and no clock unless the caller passes a date.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr
from html import escape
from typing import Any

from core.digest import (
    IMPACT_TITLE,
    impact_headline,
    impact_items,
    impact_left_out,
    impact_summaries,
    impact_text,
)
from core.render import summary_line, to_json
from core.report import region_event_line, tag_address_counts
from notifier.recipients import Recipient

Report = dict[str, Any]

SUBJECT_PREFIX = "[servicetags]"
REGION_HEADER = "X-Servicetags-Region"
REPORT_HEADER = "X-Servicetags-Report"
MESSAGE_ID_HEADER = "X-Servicetags-Message-Id"  # ACS sets its own Message-ID; ours travels here

IMPACT_FOLD_AFTER = 40  # affected rules in a body; the digest's attachment has every one it holds

_STATUS_COLOUR = {"added": "#1a7f37", "removed": "#cf222e", "changed": "#9a6700", "metadata": "#57606a"}


def subject(report: Report) -> str:
    event = region_event_line(report)  # a new or removed region is said first
    return f"{SUBJECT_PREFIX} {event + ': ' if event else ''}{summary_line(report)}"


def attachment_name(report: Report) -> str:
    return (
        f"servicetags-report-{report['region']}-{report['from']['changeNumber']}"
        f"-{report['to']['changeNumber']}.json"
    )


def message_id_for(key: str, sender: str) -> str:
    """A Message-ID that is the same for every rendering with the same idempotency key, so a
    re-sent e-mail is recognisable (and mail clients thread or de-duplicate it)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "servicetags.invalid"
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}@{domain}>"


def _n(value: int) -> str:
    return f"{value:,}"


def _numbers(tag: dict[str, Any]) -> str:
    cn = tag["change_number"]
    return f"{cn['from'] or 'none'} → {cn['to'] or 'none'}"


def _tag_counts(tag: dict[str, Any]) -> tuple[int, int, int, int]:
    return tag_address_counts(tag)


def _net_is_listed(tag: dict[str, Any]) -> bool:
    return bool(tag["net_added"] == tag["added_prefixes"] and tag["net_removed"] == tag["removed_prefixes"])


def _sections(tag: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The prefix lists worth showing for a tag. Most often the net lists repeat the listed
    prefixes word for word; then they are left out (see `_net_note`) to halve long e-mails."""
    sections = [("added", tag["added_prefixes"]), ("removed", tag["removed_prefixes"])]
    if not _net_is_listed(tag):
        sections += [("net added", tag["net_added"]), ("net removed", tag["net_removed"])]
    return [(title, items) for title, items in sections if items]


def _net_note(tag: dict[str, Any]) -> str:
    if tag["status"] == "metadata":
        return "prefixes unchanged"
    if _net_is_listed(tag):
        return "net change: exactly the listed prefixes"
    if not tag["net_added"] and not tag["net_removed"]:
        return "net change: none (the same addresses, listed differently)"
    return "net change: see the net lists"


def _metadata(tag: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {json.dumps(change['from'])} → {json.dumps(change['to'])}"
        for key, change in tag["metadata_changes"].items()
    ]


def _footer(report: Report, blob_url: str | None) -> str:
    where = f"Stored report: {blob_url}\n" if blob_url else ""
    return (
        f"{where}The full report is attached as {attachment_name(report)}.\n"
        f"Snapshots: {report['from']['sha256'][:12]} → {report['to']['sha256'][:12]}.\n"
    )


def plain_text(report: Report, *, blob_url: str | None = None, impact: dict[str, Any] | None = None) -> str:
    s = report["summary"]
    event = region_event_line(report)
    lines = [
        *([event, ""] if event else []),
        f"Service tag changes, {report['cloud']} cloud, region {report['region']}",
        summary_line(report),
        "",
        f"Tags: {s['tags_added']} added, {s['tags_removed']} removed, {s['tags_changed']} changed, "
        f"{s['tags_metadata_only']} metadata only",
        f"Prefixes: +{_n(s['prefixes_added'])} / -{_n(s['prefixes_removed'])}",
        f"IPv4 addresses: +{_n(s['ipv4_addresses_added'])} / -{_n(s['ipv4_addresses_removed'])}",
        f"IPv6 addresses: +{_n(s['ipv6_addresses_added'])} / -{_n(s['ipv6_addresses_removed'])}",
        "",
    ]
    if impact is not None:
        lines += [*impact_text({"impact": impact}, max_items=IMPACT_FOLD_AFTER), ""]
    for tag in report["tags"]:
        v4_added, v4_removed, v6_added, v6_removed = _tag_counts(tag)
        service = f", service {tag['system_service']}" if tag["system_service"] else ""
        lines.append(f"{tag['id']} [{tag['status']}] (tag change {_numbers(tag)}{service})")
        lines.append(
            f"  addresses: IPv4 +{_n(v4_added)}/-{_n(v4_removed)}, "
            f"IPv6 +{_n(v6_added)}/-{_n(v6_removed)}; {_net_note(tag)}"
        )
        for title, items in _sections(tag):
            lines.append(f"  {title} ({len(items)}):")
            lines += [f"    {p}" for p in items]
        lines += [f"  {line}" for line in _metadata(tag)]
        lines.append("")
    return "\n".join(lines) + _footer(report, blob_url)


_CELL = 'style="padding:2px 8px;border:1px solid #d0d7de;text-align:right"'
_HEAD = 'style="padding:2px 8px;border:1px solid #d0d7de;text-align:left"'


def _summary_table(s: dict[str, int]) -> str:
    rows = [
        ("tags", s["tags_added"], s["tags_removed"]),
        ("prefixes", s["prefixes_added"], s["prefixes_removed"]),
        ("IPv4 addresses", s["ipv4_addresses_added"], s["ipv4_addresses_removed"]),
        ("IPv6 addresses", s["ipv6_addresses_added"], s["ipv6_addresses_removed"]),
    ]
    body = "".join(
        f"<tr><th {_HEAD}>{what}</th><td {_CELL}>{_n(a)}</td><td {_CELL}>{_n(r)}</td></tr>"
        for what, a, r in rows
    )
    return (
        f'<table style="border-collapse:collapse">'
        f"<tr><th {_HEAD}></th><th {_HEAD}>added</th><th {_HEAD}>removed</th></tr>{body}</table>"
        f"<p>Tags changed: {s['tags_changed']}; metadata only: {s['tags_metadata_only']}.</p>"
    )


def _html_tag(tag: dict[str, Any]) -> str:
    v4_added, v4_removed, v6_added, v6_removed = _tag_counts(tag)
    colour = _STATUS_COLOUR[tag["status"]]
    service = f" · service {escape(tag['system_service'])}" if tag["system_service"] else ""
    parts = [
        f'<h3 style="margin:16px 0 4px">{escape(tag["id"])} '
        f'<span style="color:{colour}">[{escape(tag["status"])}]</span></h3>',
        f'<p style="margin:0">tag change {escape(_numbers(tag))}{service} · '
        f"IPv4 +{_n(v4_added)}/-{_n(v4_removed)} · IPv6 +{_n(v6_added)}/-{_n(v6_removed)} addresses · "
        f"{escape(_net_note(tag))}</p>",
    ]
    for title, items in _sections(tag):
        listed = "".join(f"<li><code>{escape(p)}</code></li>" for p in items)
        parts.append(
            f'<p style="margin:4px 0 0">{escape(title)} ({len(items)}):</p><ul style="margin:0">{listed}</ul>'
        )
    if tag["metadata_changes"]:
        listed = "".join(f"<li>{escape(line)}</li>" for line in _metadata(tag))
        parts.append(f'<p style="margin:4px 0 0">metadata:</p><ul style="margin:0">{listed}</ul>')
    return "\n".join(parts)


def html_body(report: Report, *, blob_url: str | None = None, impact: dict[str, Any] | None = None) -> str:
    title = f"Service tag changes: {report['region']} ({report['cloud']})"
    link = (
        f'<p>Stored report: <a href="{escape(blob_url, quote=True)}">{escape(blob_url)}</a></p>'
        if blob_url
        else ""
    )
    tags = "\n".join(_html_tag(t) for t in report["tags"])
    event = region_event_line(report)
    headline = f"<h1>{escape(event)}</h1>\n" if event else ""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>\n"
        '<body style="font-family:sans-serif;font-size:14px">\n'
        f"{headline}<h2>{escape(title)}</h2>\n<p>{escape(summary_line(report))}</p>\n"
        f"{_summary_table(report['summary'])}\n"
        + (impact_html({"impact": impact}) + "\n" if impact is not None else "")
        + f"{tags}\n{link}"
        f"<p>The full report is attached as <code>{escape(attachment_name(report))}</code>. "
        f"Snapshots {escape(report['from']['sha256'][:12])} → {escape(report['to']['sha256'][:12])}.</p>\n"
        "</body></html>\n"
    )


def impact_html(digest: dict[str, Any]) -> str:
    """The impact section of a digest (or of `{"impact": member}` for one report), escaped."""
    head = impact_headline(digest) or ""
    summary = head.removeprefix(f"{IMPACT_TITLE}: ")
    parts = [f"<h3>{escape(IMPACT_TITLE)}</h3>", f"<p>{escape(summary)}</p>"]
    lines = [f"<li>{escape(line)}</li>" for line in impact_summaries(digest)]
    if lines:
        parts.append("<ul>" + "".join(lines) + "</ul>")
    pairs = impact_items(digest)
    for entry, item in pairs[:IMPACT_FOLD_AFTER]:
        stale = ' <strong style="color:#b42318">stale</strong>' if item["stale"] else ""
        parts.append(
            f'<p style="margin:8px 0 0 0">{escape(entry["region"])}: {escape(item["kind"])} '
            f"<code>{escape(item['resource'])}</code> <code>{escape(item['rule'])}</code>{stale}</p>"
            + "".join(f'<p style="margin:0 0 0 16px">{escape(line.strip())}</p>' for line in item["lines"])
        )
    left = max(0, len(pairs) - IMPACT_FOLD_AFTER) + impact_left_out(digest)
    if left:
        parts.append(f"<p>… and {left} more affected rule{'s' if left != 1 else ''} not shown here</p>")
    return '<div class="impact">' + "\n".join(parts) + "</div>"


def render_email(
    report: Report,
    *,
    sender: str,
    recipient: Recipient | str,
    message_id: str,
    blob_name: str | None = None,
    blob_url: str | None = None,
    date: datetime | None = None,
    impact: dict[str, Any] | None = None,
) -> EmailMessage:
    """The e-mail for `report` (already filtered for `recipient`).

    `impact`: the digest contract's impact member for this one report (`core.digest.
    impact_member`), when the impact step is deployed; None leaves the section out.

    `message_id` is the idempotency key of this send (e.g. report blob name plus recipient
    address); the Message-ID header is derived from it, so every re-send carries the same one.
    `date` sets the Date header; rendering reads no clock.
    """
    if isinstance(recipient, str):
        recipient = Recipient(recipient)
    msg = EmailMessage()
    msg["From"] = sender
    user, _, domain = recipient.address.rpartition("@")
    msg["To"] = Address(display_name=recipient.name, username=user, domain=domain)
    msg["Subject"] = subject(report)
    msg["Message-ID"] = message_id_for(message_id, sender)
    if date is not None:
        msg["Date"] = format_datetime(date)
    msg[REGION_HEADER] = report["region"]
    if blob_name:
        msg[REPORT_HEADER] = blob_name
    msg.set_content(plain_text(report, blob_url=blob_url, impact=impact))
    msg.add_alternative(html_body(report, blob_url=blob_url, impact=impact), subtype="html")
    msg.add_attachment(
        to_json(report).encode("utf-8"),
        maintype="application",
        subtype="json",
        filename=attachment_name(report),
    )
    return msg


def _acs_addresses(values: list[str]) -> list[dict[str, str]]:
    out = []
    for name, address in getaddresses(values):
        entry = {"address": address}
        if name:
            entry["displayName"] = name
        out.append(entry)
    return out


def to_acs_message(msg: EmailMessage) -> dict[str, Any]:
    """The Communication Services Email message dict carrying the same content as `msg`."""
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    recipients = {"to": _acs_addresses([str(v) for v in msg.get_all("To", [])])}
    cc = msg.get_all("Cc", [])
    if cc:
        recipients["cc"] = _acs_addresses([str(v) for v in cc])
    headers = {name: str(value) for name, value in msg.items() if name.lower().startswith("x-servicetags-")}
    if msg["Message-ID"]:
        headers[MESSAGE_ID_HEADER] = str(msg["Message-ID"])
    attachments = []
    for part in msg.iter_attachments():
        assert isinstance(part, EmailMessage)  # EmailMessage parts are EmailMessages
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        attachments.append(
            {
                "name": part.get_filename() or "attachment",
                "contentType": part.get_content_type(),
                "contentInBase64": base64.b64encode(payload).decode("ascii"),
            }
        )
    return {
        "senderAddress": parseaddr(str(msg["From"]))[1],
        "recipients": recipients,
        "content": {
            "subject": str(msg["Subject"]),
            "plainText": plain.get_content() if plain else "",
            "html": html.get_content() if html else "",
        },
        "attachments": attachments,
        "headers": headers,
        # Operational mail: no tracking pixels or rewritten links.
        "userEngagementTrackingDisabled": True,
    }
