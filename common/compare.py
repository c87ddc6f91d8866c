"""One call from two snapshots and a region name to a change report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from common.diff import diff_tags
from common.model import Snapshot
from common.prefixes import PrefixParser
from common.regions import ALL, RegionIndex, region_index, selects_all
from common.report import build_report
from common.snapshot import content_sha256, tag_digests


def index_of(*snapshots: Snapshot) -> RegionIndex:
    """Region names known from any of the snapshots (a region may appear or disappear)."""
    return region_index(t for s in snapshots for t in s.tags.values())


def compare(
    old: Snapshot,
    new: Snapshot,
    *,
    region: str = "all",
    parser: PrefixParser,
    index: RegionIndex | None = None,
    old_digests: Callable[[], Mapping[str, bytes]] | None = None,
) -> dict[str, Any]:
    """The change report for `region` (ARM name, data code, `global` or `all`).

    `old_digests` gives `tag_digests(old)` computed elsewhere; it is called once the diff is
    done, so it may wait for work that ran meanwhile. Raises UnknownRegionError for a name
    neither snapshot knows.
    """
    if index is None and selects_all(region):
        code, name = None, ALL  # no region names to look up
    else:
        index = index or index_of(old, new)
        code = index.code_for(region)
        name = ALL if code is None else index.name_for(code)
    old, new = old.select(code), new.select(code)
    changes = diff_tags(old.tags, new.tags, parser)
    # The new tags that are not the old ones first, then the old digests (which may wait).
    fresh = tag_digests(new, skip=old)
    before = old_digests() if old_digests is not None else tag_digests(old)
    after = {tag_id: fresh.get(tag_id) or before[tag_id] for tag_id in new.tags}
    return build_report(
        cloud=new.cloud,
        region=name,
        old_change_number=old.change_number,
        old_sha256=content_sha256(old, before),
        new_change_number=new.change_number,
        new_sha256=content_sha256(new, after),
        changes=changes,
    )
