"""`servicetags import FILE...|DIR`: backfill archived download files into the history.

Each file goes, in change-number order, through the worker's own `handle_region` for every
region it holds (and every region already recorded, so a region missing from a file meets
the worker's own rule for that), with the file as the source and the file's date as the
clock: the same content-addressed snapshots, reports and region states as a live run.

Repeatable and resumable: a file whose change number is already in the history ledger
(`history/<cloud>/changes/<cn>.json`, written once all its regions are recorded) is skipped,
so a second run writes nothing; a run killed halfway redoes only the unfinished file, whose
writes are create-only or conditional. The history index and the web view are brought up to
date once at the end. Reports are not announced unless `--notify`: a marker written before
each report tells the notifier it was imported.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from core.errors import ServiceTagsError
from runtime.arguments import ArgumentParser, fail

THREADS = 4
_DATE_IN_NAME = re.compile(r"(?<!\d)(20\d\d)-?([01]\d)-?([0-3]\d)(?!\d)")
_TOP_CHANGE = re.compile(rb'"changeNumber"\s*:\s*"?(\w+)"?')
_TOP_CLOUD = re.compile(rb'"cloud"\s*:\s*"(\w+)"')


class Archive(NamedTuple):
    path: Path
    cloud: str
    change_number: str
    date: datetime


def archive_date(path: Path) -> datetime:
    """The date in the file name (Microsoft's ServiceTags_Public_20250106.json, or
    2025-01-06), else the file's modification time."""
    m = _DATE_IN_NAME.search(path.name)
    if m:
        try:
            return datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)


def read_archive(path: Path) -> tuple[Archive, bytes]:
    """The file's cloud and top-level change number, and its bytes as stored (gzip or not)."""
    from core.errors import SnapshotError
    from core.snapshot import decompress, parse_json

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(str(path), f"cannot read ({exc.strerror})") from None
    text = decompress(raw, str(path), gz_expected=path.name.endswith(".gz"))
    # Both shapes put the top-level members before "values"; parse the whole file otherwise.
    head = text[: text.find(b'"values"')] if b'"values"' in text else b""
    change, cloud = _TOP_CHANGE.search(head), _TOP_CLOUD.search(head)
    if change and cloud:
        found = (cloud[1].decode(), change[1].decode())
    else:
        doc = parse_json(text, str(path))
        if not isinstance(doc, dict) or "changeNumber" not in doc or "cloud" not in doc:
            raise SnapshotError(str(path), "has no top-level cloud and changeNumber: not a service-tag file")
        found = (str(doc["cloud"]), str(doc["changeNumber"]))
    return Archive(path, found[0], found[1], archive_date(path)), raw


def collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.iterdir() if p.is_file() and p.name.endswith((".json", ".json.gz"))
            )
        elif path.exists():
            files.append(path)
        else:
            raise ServiceTagsError(f"{path}: no such file or directory")
    if not files:
        raise ServiceTagsError(f"no .json or .json.gz files in {', '.join(map(str, paths))}")
    return files


class QuietReports:
    """The reports container, marking each report as imported just before writing it, so
    the notifier leaves it alone. Marker first: a crash in between only leaves a marker."""

    def __init__(self, reports: Any, markers: Any) -> None:
        self._reports, self._markers = reports, markers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reports, name)

    def create(self, name: str, data: bytes, **kwargs: Any) -> bool:
        from runtime.history_store import imported_marker

        self._markers.create(imported_marker(name), b'{"schema": "servicetags.imported/v1"}')
        return bool(self._reports.create(name, data, **kwargs))


class Remembering:
    """A container whose create-only blobs (named by their content) this run wrote or found
    are read back from memory: the worker reads each region's previous snapshot, and the
    index update each new report, right after they were written."""

    def __init__(self, store: Any, immutable: Callable[[str], bool]) -> None:
        self._store, self._immutable = store, immutable
        self._kept: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def create(self, name: str, data: bytes, **kwargs: Any) -> bool:
        from core.ports import Blob

        created = bool(self._store.create(name, data, **kwargs))
        if self._immutable(name):
            with self._lock:
                self._kept[name] = Blob(data, "")
        return created

    def read(self, name: str) -> Any:
        kept = self._kept.get(name)
        return kept if kept is not None else self._store.read(name)


class FileBody:
    """A TagSource answering every location with one archived file."""

    def __init__(self, body: bytes, origin: str) -> None:
        from core.ports import Fetched

        self._fetched = Fetched(body, origin)

    def fetch(self, cloud: str, location: str) -> Any:
        return self._fetched


def _fixed(moment: datetime) -> Any:
    return lambda: moment


class Stores(NamedTuple):
    snapshots: Any
    reports: Any
    history: Any
    notifications: Any
    web: Any | None
    web_base_url: str = ""


def import_files(
    files: list[Path], stores: Stores, *, notify: bool = False, regions: str = "all", out: Any = sys.stdout
) -> dict[str, int]:
    """Import in change order; returns counts. Raises ServiceTagsError on a bad file."""
    from core.errors import PermanentError
    from core.history_index import change_key
    from core.messages import RegionMessage
    from core.regions import GLOBAL
    from runtime.history_store import change_date, iso, record_change, sync
    from worker.handler import ParsedReplies, handle_region

    archives = sorted(
        (read_archive(f)[0] for f in files), key=lambda a: (a.cloud, change_key(a.change_number))
    )
    snapshots = Remembering(stores.snapshots, lambda name: "/snapshots/" in name)
    written_reports = Remembering(stores.reports, lambda name: True)
    reports = written_reports if notify else QuietReports(written_reports, stores.notifications)
    replies = ParsedReplies(size=1)
    counts = {"files": 0, "skipped": 0, "reports": 0, "regions": 0}
    clouds = []
    seen: set[tuple[str, str]] = set()
    for archive in archives:
        if archive.cloud not in clouds:
            clouds.append(archive.cloud)
        key = (archive.cloud, archive.change_number)
        if key in seen or change_date(stores.history, *key) is not None:
            counts["skipped"] += 1
            print(
                f"{archive.path.name}: change {archive.change_number} already in the history, skipped",
                file=out,
            )
            continue
        seen.add(key)
        _, body = read_archive(archive.path)
        reply = replies.get(body, str(archive.path))
        recorded = sorted(
            {
                n.split("/")[1]
                for n in stores.snapshots.names(f"{archive.cloud}/")
                if n.endswith("/latest.json")
            }
            - {GLOBAL}
        )
        chosen = [*sorted(set(reply.regions.names) | set(recorded)), GLOBAL]
        if regions.strip().lower() != "all":
            wanted = {r.strip().lower() for r in regions.split(",") if r.strip()}
            chosen = [r for r in chosen if r in wanted]
        source = FileBody(body, str(archive.path))
        replies.get(body, str(archive.path))  # parsed once, before the threads share it

        def check(region: str, archive: Archive = archive, source: FileBody = source) -> str | None:
            message = RegionMessage(archive.cloud, region, f"import-{archive.change_number}")
            try:
                outcome = handle_region(
                    message,
                    source=source,
                    snapshots=snapshots,
                    reports=reports,
                    replies=replies,
                    clock=_fixed(archive.date),
                )
            except PermanentError as exc:
                # A recorded region this file does not hold, with a worker that does not retire
                # regions: nothing to record for it from this file.
                print(f"{archive.path.name}: {region}: {exc}", file=out)
                return None
            return str(outcome.report) if outcome.report else None

        # Regions are independent (one state blob each); threads overlap the storage round trips.
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            written = sum(r is not None for r in pool.map(check, chosen))
        record_change(
            stores.history,
            archive.cloud,
            archive.change_number,
            iso(archive.date),
            seen_by="import",
            file=archive.path.name,
        )
        counts["files"] += 1
        counts["reports"] += written
        counts["regions"] = max(counts["regions"], len(chosen))
        print(
            f"{archive.path.name}: change {archive.change_number} of {archive.cloud}, "
            f"{len(chosen)} regions, {written} reports",
            file=out,
        )
    for cloud in clouds:
        synced = sync(
            cloud,
            snapshots=snapshots,
            reports=written_reports,
            history=stores.history,
            clock=lambda: datetime.now(UTC),
        )
        if stores.web is not None:
            from web.publish import publish

            published = publish(
                cloud,
                index_data=synced.data,
                reports=stores.reports,
                web=stores.web,
                base_url=stores.web_base_url,
            )
            counts["pages"] = counts.get("pages", 0) + published
    return counts


def stores_from_env(env: Any) -> Stores:
    from runtime.adapters.storage import StorageSettings, open_storage

    settings = StorageSettings.from_env(env)
    history = env.str("SERVICETAGS_HISTORY_CONTAINER", "history") or "history"
    notifications = env.str("SERVICETAGS_NOTIFICATIONS_CONTAINER", "notifications") or "notifications"
    web = env.str("SERVICETAGS_WEB_CONTAINER", "$web") or "$web"
    clients = open_storage(
        settings,
        env.cloud(),
        containers=[settings.snapshots_container, settings.reports_container, history, notifications, web],
    )
    publish = env.bool("SERVICETAGS_WEB_PUBLISH", True)
    return Stores(
        clients.container(settings.snapshots_container),
        clients.container(settings.reports_container),
        clients.container(history),
        clients.container(notifications),
        clients.container(web) if publish else None,
        env.str("SERVICETAGS_WEB_BASE_URL", "") or "",
    )


def main(argv: list[str], prog: str = "servicetags import") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Backfill archived service-tag files (download file or "
        "API reply, gzipped or not) into the history, in change-number order. "
        "Storage comes from SERVICETAGS_* environment variables.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    parser.add_argument(
        "--regions",
        default="all",
        metavar="all|R1,R2",
        help="ARM location names (and global) to import (default: all); a file "
        "is imported once, so regions left out are not added by a later run",
    )
    parser.add_argument(
        "--notify",
        action="store_true",
        help="let the notifier announce the imported reports (default: it does not)",
    )
    args = parser.parse_args(argv)
    from runtime.config import Env

    try:
        files = collect(args.paths)
        for f in files:
            read_archive(f)  # every file checked before anything is written
        counts = import_files(files, stores_from_env(Env()), notify=args.notify, regions=args.regions)
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    except OSError as exc:
        return fail(prog, f"{exc.filename or ''}: {exc.strerror}" if exc.strerror else str(exc))
    print(
        f"imported {counts['files']} files ({counts['skipped']} already there), "
        f"{counts['reports']} reports; "
        f"history index and {counts.get('pages', 0)} web files updated",
        file=sys.stdout,
    )
    return 0
