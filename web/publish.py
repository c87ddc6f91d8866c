"""Publishing the static web view to the `$web` container, and `servicetags publish`.

    <cloud>/index.html            latest change per region, weekly chart, recent reports
    <cloud>/reports/<region>/<from>-<to>_<sha>_<sha>.html   one page per report (create-only)
    <cloud>/lookup.html, <cloud>/index.bin   the lookup page and the index it reads
    <cloud>/feed.atom, <cloud>/feeds/<region>.atom            Atom feeds
    index.html, style.css, lookup.js                          shared

Idempotent: report pages are written once, every other file only when its bytes differ
from what is stored (under the stored ETag), so a second run writes nothing. The one
exception: a report page written before the report's impact document existed is written
again, once, when it does (`<cloud>/impact-pages.json` lists the reports whose page shows
their impact, so no page is read to find out).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from core.history_index import Index
from web.feeds import atom_feed
from web.pages import cloud_index_page, lookup_page, report_page, report_page_name, root_index_page

CLOUDS = ("Public", "AzureGovernment", "AzureChina")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".bin": "application/octet-stream",
}


def content_type(name: str) -> str:
    return TYPES.get(name[name.rfind(".") :], "application/octet-stream")


def asset(name: str) -> bytes:
    return resources.files("web").joinpath("assets", name).read_bytes()


def _put(web: Any, name: str, data: bytes) -> bool:
    """Write when different; True when written."""
    existing = web.read(name)
    if existing is not None and existing.data == data:
        return False
    return (
        web.replace(name, data, etag=existing.etag if existing else None, content_type=content_type(name))
        is not None
    )


def _impact_of(impacts: Any, name: str) -> dict[str, Any] | None:
    blob = impacts.read(name) if impacts is not None else None
    if blob is None:
        return None
    try:
        doc = json.loads(blob.data)
    except ValueError:
        return None  # advisory: a page without it rather than no page
    return doc if isinstance(doc, dict) and isinstance(doc.get("affected"), list) else None


def publish(
    cloud: str, *, index_data: bytes, reports: Any, web: Any, base_url: str = "", impacts: Any = None
) -> int:
    """Bring the site of one cloud up to date; the number of files written. `impacts`: the
    impact step's results container (read only), None where it is not deployed."""
    index = Index.from_bytes(index_data, f"{cloud} history index")
    dates = dict(index.changes)
    if base_url and not base_url.endswith("/"):
        base_url += "/"
    written = 0
    existing = set(web.names(f"{cloud}/reports/"))
    with_impact = set(impacts.names(f"{cloud}/")) if impacts is not None else set()
    shown_name = f"{cloud}/impact-pages.json"
    shown_blob = web.read(shown_name)
    shown = set(json.loads(shown_blob.data)) if shown_blob is not None else set()
    for row in index.reports:
        page = report_page_name(cloud, row[0])
        late = row[0] in with_impact and row[0] not in shown  # its impact came after its page
        if page in existing and not late:
            continue
        blob = reports.read(row[0])
        if blob is None:
            continue  # deleted by hand: the feed still lists it, its page cannot be made
        impact = _impact_of(impacts, row[0]) if row[0] in with_impact else None
        html = report_page(
            json.loads(blob.data), name=row[0], date=dates.get(row[3], ""), impact=impact
        ).encode()
        if page in existing:
            written += _put(web, page, html)
        else:
            written += web.create(page, html, content_type=content_type(page))
        if impact is not None:
            shown.add(row[0])
    # After the pages: a crash between them renders those pages again, to the same bytes.
    if shown or shown_blob is not None:
        written += _put(web, shown_name, (json.dumps(sorted(shown), indent=0) + "\n").encode())
    files: dict[str, bytes] = {
        f"{cloud}/index.bin": index_data,
        f"{cloud}/index.html": cloud_index_page(index).encode(),
        f"{cloud}/lookup.html": lookup_page(cloud).encode(),
        f"{cloud}/feed.atom": atom_feed(
            cloud=cloud, region=None, reports=index.reports, dates=dates, base_url=base_url
        ).encode(),
        "style.css": asset("style.css"),
        "lookup.js": asset("lookup.js"),
    }
    for region in sorted({r[1] for r in index.reports}):
        files[f"{cloud}/feeds/{region}.atom"] = atom_feed(
            cloud=cloud,
            region=region,
            reports=[r for r in index.reports if r[1] == region],
            dates=dates,
            base_url=base_url,
        ).encode()
    for name, data in files.items():
        written += _put(web, name, data)
    clouds = []
    for c in CLOUDS:
        other = index if c == cloud else _published(web, c)
        if other is not None and other.changes:
            cn, date = other.changes[-1]
            clouds.append((c, cn, date))
    written += _put(web, "index.html", root_index_page(clouds).encode())
    return written


def _published(web: Any, cloud: str) -> Index | None:
    blob = web.read(f"{cloud}/index.bin")
    return Index.from_bytes(blob.data, f"$web/{cloud}/index.bin") if blob else None


def sync_and_publish(env: Any, *, cloud: str | None = None, rebuild: bool = False) -> tuple[Any, int]:
    """What the publisher job does: the index from the blobs, then $web. (Synced, files written)."""
    from runtime.history_store import sync
    from servicetags.import_command import stores_from_env

    cloud = cloud or env.cloud()
    stores = stores_from_env(env)
    synced = sync(
        cloud,
        snapshots=stores.snapshots,
        reports=stores.reports,
        history=stores.history,
        clock=lambda: datetime.now(UTC),
        rebuild=rebuild,
    )
    pages = 0
    if stores.web is not None:
        pages = publish(
            cloud,
            index_data=synced.data,
            reports=stores.reports,
            web=stores.web,
            base_url=stores.web_base_url,
            impacts=_impacts(env),
        )
    return synced, pages


def _impacts(env: Any) -> Any:
    """The impact step's results container (SERVICETAGS_IMPACT_CONTAINER, default `impact`;
    `none` where the step is not deployed)."""
    from runtime.adapters.storage import StorageClients, StorageSettings
    from runtime.identity import azure_credential

    name = env.str("SERVICETAGS_IMPACT_CONTAINER", "impact") or "impact"
    if name.lower() == "none":
        return None
    settings = StorageSettings.from_env(env)
    clients = StorageClients(settings, None if settings.local else azure_credential(env.cloud()))
    if settings.local:
        clients.ensure([name], [])
    return clients.container(name)


def _publish_queue(env: Any) -> Any:
    from runtime.adapters.storage import StorageSettings, open_storage

    name = env.str("SERVICETAGS_PUBLISH_QUEUE", "publish-events") or "publish-events"
    return open_storage(StorageSettings.from_env(env), env.cloud(), queues=[name]).queue(name)


def main(argv: list[str], prog: str = "servicetags publish") -> int:
    from core.errors import ServiceTagsError
    from core.history_index import IndexError_
    from runtime.arguments import ArgumentParser, fail
    from runtime.config import Env

    parser = ArgumentParser(
        prog=prog,
        description="Bring the history index up to date with the snapshot and "
        "report blobs, then the static web view in $web. Idempotent.",
    )
    parser.add_argument("--cloud", help="default: SERVICETAGS_CLOUD")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index from the blobs")
    parser.add_argument(
        "--from-queue",
        action="store_true",
        help="take the report events waiting in SERVICETAGS_PUBLISH_QUEUE, publish once, "
        "then delete them (what the event-triggered publisher job runs)",
    )
    args = parser.parse_args(argv)
    try:
        env = Env()
        cloud = args.cloud or env.cloud()
        taken: list[Any] = []
        queue = None
        if args.from_queue:
            queue = _publish_queue(env)
            # Every event says the same thing, "a report was written": one publish serves all
            # of them. They are deleted only after it, so a crash leaves them to the next run.
            while (message := queue.receive(visibility_timeout=600)) is not None and len(taken) < 1000:
                taken.append(message)
        synced, pages = sync_and_publish(env, cloud=cloud, rebuild=args.rebuild)
        for message in taken:
            assert queue is not None
            queue.delete(message)
    except (ServiceTagsError, IndexError_) as exc:
        return fail(prog, str(exc))
    print(
        f"{cloud}: index {'updated' if synced.changed else 'unchanged'} "
        f"({len(synced.new_reports)} new reports); {pages} web files written"
        + (f"; {len(taken)} report events taken" if args.from_queue else ""),
        file=sys.stdout,
    )
    return 0
