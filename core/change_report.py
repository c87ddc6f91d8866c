"""One call from two snapshots and a region name to a change report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.canonical import content_sha256, tag_digests
from core.diff import TagChange, diff_tags
from core.model import Snapshot
from core.prefixes import PrefixParser
from core.regions import ALL, RegionIndex, region_index, selects_all
from core.report import build_report


def index_of(*snapshots: Snapshot) -> RegionIndex:
    """Region names known from any of the snapshots (a region may appear or disappear)."""
    return region_index(t for s in snapshots for t in s.tags.values())


def change_report(
    old: Snapshot,
    new: Snapshot,
    *,
    region: str = "all",
    parser: PrefixParser,
    index: RegionIndex | None = None,
) -> dict[str, Any]:
    """The change report for `region` (ARM name, data code, `global` or `all`).

    Raises UnknownRegionError for a name neither snapshot knows."""
    old, new, name = select_region(old, new, region, index)
    changes = diff_tags(old.tags, new.tags, parser)
    return report_of(old, new, name, changes, tag_digests(old))


def select_region(
    old: Snapshot, new: Snapshot, region: str, index: RegionIndex | None = None
) -> tuple[Snapshot, Snapshot, str]:
    """Both snapshots narrowed to `region`, and the region's report name."""
    if index is None and selects_all(region):
        code, name = None, ALL  # no region names to look up
    else:
        index = index or index_of(old, new)
        code = index.code_for(region)
        name = ALL if code is None else index.name_for(code)
    return old.select(code), new.select(code), name


def report_of(
    old: Snapshot, new: Snapshot, region_name: str, changes: list[TagChange], old_digests: Mapping[str, bytes]
) -> dict[str, Any]:
    """The report of `changes` between two selected snapshots. `old_digests` is
    `tag_digests(old)` (or of a snapshot holding it); the new tags' digests are computed
    only for tags that are not the old ones."""
    fresh = tag_digests(new, skip=old)
    after = {tag_id: fresh.get(tag_id) or old_digests[tag_id] for tag_id in new.tags}
    return build_report(
        cloud=new.cloud,
        region=region_name,
        old_change_number=old.change_number,
        old_sha256=content_sha256(old, old_digests),
        new_change_number=new.change_number,
        new_sha256=content_sha256(new, after),
        changes=changes,
    )
