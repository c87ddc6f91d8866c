"""One call from two snapshots and a region name to a change report."""

from __future__ import annotations

from typing import Any

from common.diff import diff_tags
from common.model import Snapshot
from common.prefixes import PrefixParser
from common.regions import RegionIndex, region_index
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
) -> dict[str, Any]:
    """The change report for `region` (ARM name, data code, `global` or `all`).

    Raises UnknownRegionError for a name neither snapshot knows.
    """
    index = index or index_of(old, new)
    code = index.code_for(region)
    old, new = old.select(code), new.select(code)
    name = "all" if code is None else index.name_for(code)
    old_digests = tag_digests(old)
    new_digests = tag_digests(new, known=(old, old_digests))
    return build_report(
        cloud=new.cloud,
        region=name,
        old_change_number=old.change_number,
        old_sha256=content_sha256(old, old_digests),
        new_change_number=new.change_number,
        new_sha256=content_sha256(new, new_digests),
        changes=diff_tags(old.tags, new.tags, parser),
    )
