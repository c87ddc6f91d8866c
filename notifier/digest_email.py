"""The digest e-mail: one per run and recipient, plain text and HTML, the full JSON attached. Pure.

It opens with the same lines as every channel (new or retired regions, totals, regions not
checked), then the table of regions and tags, then per tag its prefixes, folded after
`FOLD_AFTER` each (the attachment holds every prefix of every report).
"""

from __future__ import annotations

import json
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from html import escape
from typing import Any

from core.digest import TABLE_HEADER, UNITS_NOTE, DigestReport, headline, impact_text, table_cells, title
from notifier.chat_render import table_lines
from notifier.email_render import IMPACT_FOLD_AFTER, SUBJECT_PREFIX, impact_html, message_id_for
from notifier.recipients import Recipient

RUN_HEADER = "X-Servicetags-Run"
REGIONS_HEADER = "X-Servicetags-Regions"
FOLD_AFTER = 10


def attachment_name(digest: dict[str, Any]) -> str:
    return f"servicetags-digest-{digest['cloud']}-{digest['run_id']}.json"


def attachment(digest: dict[str, Any], reports: list[DigestReport]) -> bytes:
    full = {**digest, "reports": {r.blob: r.report for r in reports}}
    return json.dumps(full, indent=1, ensure_ascii=False).encode("utf-8")


def _prefix_lines(reports: list[DigestReport]) -> list[str]:
    lines = []
    for item in reports:
        report = item.report
        lines.append(
            f"== {report['region']} (change {report['from']['changeNumber']} → "
            f"{report['to']['changeNumber']}): {item.url}"
        )
        for tag in report["tags"]:
            lines.append(f"  {tag['id']} [{tag['status']}]")
            for label, prefixes in (("added", tag["added_prefixes"]), ("removed", tag["removed_prefixes"])):
                if not prefixes:
                    continue
                shown = prefixes[:FOLD_AFTER]
                more = len(prefixes) - len(shown)
                lines.append(
                    f"    {label}: {', '.join(shown)}"
                    + (f" … and {more} more (in the attachment)" if more else "")
                )
    return lines


def plain_text(digest: dict[str, Any], reports: list[DigestReport]) -> str:
    lines = [title(digest), "", *headline(digest), ""]
    if digest["rows"]:
        lines += [UNITS_NOTE, "", *table_lines(digest), ""]
    if impact := impact_text(digest, max_items=IMPACT_FOLD_AFTER):
        lines += [*impact, ""]
    if digest["rows"]:
        lines += [*_prefix_lines(reports), ""]
    lines.append(f"Every prefix of every report is in the attached {attachment_name(digest)}.")
    return "\n".join(lines) + "\n"


_TD = 'style="padding:2px 8px;border:1px solid #d0d7de"'
_TDR = 'style="padding:2px 8px;border:1px solid #d0d7de;text-align:right"'


def html_body(digest: dict[str, Any], reports: list[DigestReport]) -> str:
    head = "".join(
        f"<p><strong>{escape(line)}</strong></p>"
        if i == 0 and digest["region_events"]
        else f"<p>{escape(line)}</p>"
        for i, line in enumerate(headline(digest))
    )
    table = ""
    if digest["rows"]:
        header = "".join(f"<th {_TD}>{escape(h)}</th>" for h in TABLE_HEADER)
        rows = "".join(
            "<tr>"
            + "".join(f"<td {_TD if i < 2 else _TDR}>{escape(c)}</td>" for i, c in enumerate(table_cells(r)))
            + "</tr>"
            for r in digest["rows"]
        )
        table = (
            f"<p><small>{escape(UNITS_NOTE)}</small></p>"
            f'<table style="border-collapse:collapse"><tr>{header}</tr>{rows}</table>'
        )
    details = [impact_html(digest)] if digest.get("impact") else []
    for item in reports:
        report = item.report
        parts = [
            f'<h3>{escape(report["region"])} <small><a href="{escape(item.url, quote=True)}">'
            f"full report</a></small></h3>"
        ]
        for tag in report["tags"]:
            parts.append(f"<p><code>{escape(tag['id'])}</code> [{escape(tag['status'])}]</p>")
            for label, prefixes in (("added", tag["added_prefixes"]), ("removed", tag["removed_prefixes"])):
                if prefixes:
                    shown = ", ".join(f"<code>{escape(p)}</code>" for p in prefixes[:FOLD_AFTER])
                    more = len(prefixes) - FOLD_AFTER
                    tail = f" … and {more} more (in the attachment)" if more > 0 else ""
                    parts.append(f'<p style="margin:0 0 0 16px">{label}: {shown}{tail}</p>')
        details.append("\n".join(parts))
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title(digest))}</title></head>\n"
        '<body style="font-family:sans-serif;font-size:14px">\n'
        f"<h2>{escape(title(digest))}</h2>\n{head}\n{table}\n"
        + "\n".join(details)
        + f"\n<p>Every prefix of every report is in the attached <code>{escape(attachment_name(digest))}"
        "</code>.</p>\n</body></html>\n"
    )


def render_digest_email(
    digest: dict[str, Any],
    reports: list[DigestReport],
    *,
    sender: str,
    recipient: Recipient,
    message_id: str,
    date: datetime | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    user, _, domain = recipient.address.rpartition("@")
    msg["To"] = Address(display_name=recipient.name, username=user, domain=domain)
    msg["Subject"] = f"{SUBJECT_PREFIX} {title(digest)}"
    msg["Message-ID"] = message_id_for(message_id, sender)
    if date is not None:
        msg["Date"] = format_datetime(date)
    msg[RUN_HEADER] = digest["run_id"]
    msg[REGIONS_HEADER] = ",".join(c["region"] for c in digest["changes"]) or "-"
    msg.set_content(plain_text(digest, reports))
    msg.add_alternative(html_body(digest, reports), subtype="html")
    msg.add_attachment(
        attachment(digest, reports), maintype="application", subtype="json", filename=attachment_name(digest)
    )
    return msg
