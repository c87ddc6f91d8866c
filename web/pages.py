"""The static web view's pages, as text. Pure: from the history index and report documents.

Every page is a function of its inputs alone (no clock), so publishing twice writes nothing
the second time. The chart is SVG made here: no script, no library, nothing fetched.
"""

from __future__ import annotations

from html import escape
from typing import Any

from core.history_index import Index
from core.impact_render import to_html_fragment
from core.render import summary_line

STYLE = "../style.css"


def report_page_name(cloud: str, report_name: str) -> str:
    """`Public/eastus/340-341_ab_cd.json` -> `Public/reports/eastus/340-341_ab_cd.html`."""
    rest = report_name.split("/", 1)[1] if report_name.startswith(cloud + "/") else report_name
    return f"{cloud}/reports/{rest.removesuffix('.json')}.html"


def _page(title: str, body: str, *, depth: int, feed: str | None = None) -> str:
    up = "../" * depth
    alt = f'\n<link rel="alternate" type="application/atom+xml" href="{escape(feed)}">' if feed else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="{up}style.css">{alt}
</head>
<body>
{body}
<footer>servicetags-watch · generated from the history index ·
<a href="{up}index.html">all clouds</a></footer>
</body>
</html>
"""


def chart_svg(weeks: list[tuple[str, int, int]], *, width: int = 900, height: int = 260) -> str:
    """Prefixes added (up, green) and removed (down, red) per ISO week, as inline SVG."""
    pad_left, pad_bottom, pad_top = 48, 36, 12
    if not weeks:
        return (
            '<svg id="weekly-chart" role="img" aria-label="no changes yet" width="300" height="40">'
            '<text x="0" y="24">No changes recorded yet.</text></svg>'
        )
    top = max(1, *(a for _, a, _ in weeks), *(r for _, _, r in weeks))
    plot_h = height - pad_bottom - pad_top
    mid = pad_top + plot_h / 2
    scale = (plot_h / 2) / top
    step = (width - pad_left) / len(weeks)
    bar = max(step * 0.7, 1.0)
    parts = [
        f'<svg id="weekly-chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="Prefixes added and removed per week" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<line x1="{pad_left}" y1="{mid:.1f}" x2="{width}" y2="{mid:.1f}" stroke="#888"/>',
        f'<text x="4" y="{pad_top + 10}" class="axis">+{top}</text>',
        f'<text x="4" y="{mid + 4:.1f}" class="axis">0</text>',
        f'<text x="4" y="{pad_top + plot_h:.1f}" class="axis">-{top}</text>',
    ]
    label_every = max(1, int(70 // step) + 1)  # a label is about 60 px wide
    for i, (week, added, removed) in enumerate(weeks):
        x = pad_left + i * step + (step - bar) / 2
        up, down = added * scale, removed * scale
        parts.append(
            f'<rect class="added" x="{x:.1f}" y="{mid - up:.1f}" width="{bar:.1f}" '
            f'height="{up:.1f}" '
            f'fill="#2e7d32"><title>{week}: +{added} prefixes</title></rect>'
        )
        parts.append(
            f'<rect class="removed" x="{x:.1f}" y="{mid:.1f}" width="{bar:.1f}" height="{down:.1f}" '
            f'fill="#c62828"><title>{week}: -{removed} prefixes</title></rect>'
        )
        if i % label_every == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 8}" class="axis">{week}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _summary_cell(report: list[Any]) -> str:
    _, _, _, _, added, removed, tags = report
    return f"{tags} tag{'s' if tags != 1 else ''}, +{added}/-{removed} prefixes"


def cloud_index_page(index: Index) -> str:
    """Latest change per region, the weekly chart, links to reports, feeds and the lookup."""
    cloud = index.cloud
    date_of = dict(index.changes)
    latest: dict[str, list[Any]] = {}
    for report in index.reports:
        latest[report[1]] = report  # reports are kept in the order applied: the last one wins
    rows = []
    ordered = sorted(latest.values(), key=lambda r: (date_of.get(r[3], ""), r[1]), reverse=True)
    for report in ordered:
        name, region, old, new = report[:4]
        page = report_page_name(cloud, name).removeprefix(f"{cloud}/")
        rows.append(
            f'<tr class="region-row" data-region="{escape(region)}"><td>{escape(region)}</td>'
            f"<td>{escape(date_of.get(new, '')[:10])}</td><td>{escape(old)} → {escape(new)}</td>"
            f'<td><a href="{escape(page)}">{escape(_summary_cell(report))}</a></td>'
            f'<td><a href="feeds/{escape(region)}.atom">feed</a></td></tr>'
        )
    quiet = sorted(set(index.regions) - set(latest))
    cn, date = index.changes[-1] if index.changes else ("-", "")
    recent = "\n".join(
        f'<li><a href="{escape(report_page_name(cloud, r[0]).removeprefix(cloud + "/"))}">'
        f"{escape(date_of.get(r[3], '')[:10])} {escape(r[1])}: change {escape(r[2])} → {escape(r[3])}, "
        f"{escape(_summary_cell(r))}</a></li>"
        for r in sorted(index.reports, key=lambda r: (date_of.get(r[3], ""), r[1]), reverse=True)[:30]
    )
    body = f"""<header><h1>Azure service tags: {escape(cloud)}</h1>
<p>Latest change <strong id="latest-change">{escape(cn)}</strong> ({escape(date[:10])}) ·
{len(index.regions)} regions · {len(index.reports)} reports ·
<a href="lookup.html">look up an address</a> · <a href="feed.atom">Atom feed</a></p></header>
<section><h2>Prefixes added and removed per week</h2>
{chart_svg(index.weekly_counts())}
</section>
<section><h2>Latest change per region</h2>
<table id="latest-by-region"><thead>
<tr><th>region</th><th>date</th><th>change</th><th>report</th><th></th></tr>
</thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<p class="quiet">No change since the first snapshot: {escape(", ".join(quiet)) or "none"}.</p>
</section>
<section><h2>Recent reports</h2><ul id="recent">
{recent}
</ul></section>"""
    return _page(f"Azure service tags ({cloud})", body, depth=1, feed="feed.atom")


def root_index_page(clouds: list[tuple[str, str, str]]) -> str:
    """(cloud, latest change, date) for each cloud published."""
    items = "\n".join(
        f'<li><a href="{escape(c)}/index.html">{escape(c)}</a>: change {escape(cn)} '
        f"({escape(date[:10])})</li>"
        for c, cn, date in clouds
    )
    return _page("Azure service tags", f"<h1>Azure service tags</h1>\n<ul>\n{items}\n</ul>", depth=0)


def _prefix_list(title: str, prefixes: list[str], cls: str) -> str:
    if not prefixes:
        return ""
    items = "".join(f"<li><code>{escape(p)}</code></li>" for p in prefixes)
    return f'<h4>{escape(title)} ({len(prefixes)})</h4><ul class="{cls}">{items}</ul>'


def report_page(report: dict[str, Any], *, name: str, date: str, impact: dict[str, Any] | None = None) -> str:
    """One report's page; with its impact document (impact/<report blob name>), the section
    of the rules it touches (escaped text only) after the summary."""
    cloud, region = report["cloud"], report["region"]
    s = report["summary"]
    rows = "".join(f"<tr><th>{escape(k.replace('_', ' '))}</th><td>{v:,}</td></tr>" for k, v in s.items())
    tags = []
    for tag in report["tags"]:
        meta = ""
        if tag.get("metadata_changes"):
            meta = (
                "<h4>other fields</h4><ul>"
                + "".join(
                    f"<li>{escape(k)}: {escape(str(v.get('from')))} → {escape(str(v.get('to')))}</li>"
                    for k, v in tag["metadata_changes"].items()
                )
                + "</ul>"
            )
        numbers = tag["change_number"]
        tags.append(
            f'<article class="tag"><h3>{escape(tag["id"])} '
            f'<span class="status">{escape(tag["status"])}</span></h3>'
            f"<p>service {escape(tag.get('system_service') or '-')}, tag change "
            f"{escape(str(numbers['from']))} → {escape(str(numbers['to']))}</p>"
            + _prefix_list("added", tag["added_prefixes"], "added")
            + _prefix_list("removed", tag["removed_prefixes"], "removed")
            + _prefix_list("address space gained", tag["net_added"], "net")
            + _prefix_list("address space lost", tag["net_removed"], "net")
            + meta
            + "</article>"
        )
    body = f"""<header><h1>{escape(region)}: change {escape(report["from"]["changeNumber"])} →
{escape(report["to"]["changeNumber"])}</h1>
<p>{escape(cloud)} · {escape(date[:10])} · <a href="{"../" * 2}index.html">{escape(cloud)} overview</a> ·
<a href="../../feeds/{escape(region)}.atom">feed for {escape(region)}</a></p>
<p class="summary">{escape(summary_line(report))}</p>
<p class="source">Report blob <code>{escape(name)}</code></p></header>
<table class="summary">{rows}</table>
{to_html_fragment(impact) if impact is not None else ""}{"".join(tags)}"""
    return _page(
        f"{region}: change {report['from']['changeNumber']} → {report['to']['changeNumber']}", body, depth=3
    )


def lookup_page(cloud: str) -> str:
    body = f"""<header><h1>Which {escape(cloud)} service tags hold this address?</h1>
<p><a href="index.html">{escape(cloud)} overview</a> · answered in your browser from
<a href="index.bin">the history index</a> (nothing is sent anywhere)</p></header>
<form id="lookup-form">
<label for="query">IPv4 or IPv6 address, or CIDR block</label>
<input id="query" name="q" autocomplete="off" spellcheck="false" placeholder="20.20.64.130">
<button id="go" type="submit">Look up</button>
</form>
<p id="status">Loading the index…</p>
<table id="results" hidden><thead><tr><th>tag</th><th>region</th><th>service</th><th>prefix</th>
<th>since</th></tr></thead><tbody></tbody></table>
<script src="../lookup.js"></script>"""
    return _page(f"Look up an address ({cloud})", body, depth=1)
