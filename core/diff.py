"""The diff engine: what changed between two sets of service tags, by content.

Pure functions over the model. A tag is listed when its prefixes, its change number or any
other field changed; prefix changes are reported both as listed (set difference) and as net
address coverage, so a re-aggregation (a /23 becoming two /24s) shows no net change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from core import coverage
from core.model import API_ONLY_FIELDS, ServiceTag
from core.prefixes import PrefixParser

Status = Literal["added", "removed", "changed", "metadata"]


class TagChange(NamedTuple):
    id: str
    system_service: str
    region: str
    status: Status
    change_number_from: str | None
    change_number_to: str | None
    added_prefixes: list[str]
    removed_prefixes: list[str]
    net_added: list[str]
    net_removed: list[str]
    ipv4_added: int = 0  # addresses newly covered / no longer covered
    ipv4_removed: int = 0
    ipv6_added: int = 0
    ipv6_removed: int = 0
    metadata_changes: dict[str, dict[str, Any]] = {}  # noqa: RUF012 - never mutated


def _metadata(old: ServiceTag, new: ServiceTag) -> dict[str, dict[str, Any]]:
    """Fields other than prefixes and change number that differ, as {field: {from, to}}."""
    changes: dict[str, dict[str, Any]] = {}
    if old.name != new.name:
        changes["name"] = {"from": old.name, "to": new.name}
    if old.region != new.region:
        changes["region"] = {"from": old.region, "to": new.region}
    if old.system_service != new.system_service:
        changes["systemService"] = {"from": old.system_service, "to": new.system_service}
    for before, after in ((old.properties_extra, new.properties_extra), (old.extra, new.extra)):
        if before == after:
            continue
        for key in sorted(before.keys() | after.keys()):
            if key in API_ONLY_FIELDS and (key not in before or key not in after):
                continue  # a file and an API reply differ in shape, not in content
            if before.get(key) != after.get(key):
                changes[key] = {"from": before.get(key), "to": after.get(key)}
    return changes


def _net(
    old: frozenset[str],
    new: frozenset[str],
    added_prefixes: frozenset[str],
    removed_prefixes: frozenset[str],
    parser: PrefixParser,
) -> dict[str, Any]:
    """Net coverage change. With A, R, C the added, removed and common prefixes,
    cov(new) - cov(old) = cov(A) - cov(R) - cov(C), so only the few prefixes of C that
    overlap the small set cov(A) - cov(R) need a range, not the whole tag."""
    get = parser.range
    added = list(map(get, added_prefixes))
    removed = list(map(get, removed_prefixes))
    gained: dict[int, list[coverage.Interval]] = {}
    lost: dict[int, list[coverage.Interval]] = {}
    for v in (4, 6):
        a, r = coverage.merged(added, v), coverage.merged(removed, v)
        gained[v], lost[v] = coverage.subtract(a, r), coverage.subtract(r, a)
    targets = {v: coverage.merged([(v, s, e) for s, e in gained[v] + lost[v]], v) for v in (4, 6)}
    if any(targets.values()):
        nearby = coverage.candidates(old & new, targets)
        common = coverage.overlapping(map(get, nearby), targets)
        for v in (4, 6):
            kept = coverage.merged(common, v)
            gained[v], lost[v] = coverage.subtract(gained[v], kept), coverage.subtract(lost[v], kept)
    out: dict[str, Any] = {"net_added": [], "net_removed": []}
    for v in (4, 6):
        out["net_added"] += coverage.to_cidrs(gained[v], v)
        out["net_removed"] += coverage.to_cidrs(lost[v], v)
        out[f"ipv{v}_added"] = coverage.size(gained[v])
        out[f"ipv{v}_removed"] = coverage.size(lost[v])
    return out


def _change(old: ServiceTag | None, new: ServiceTag | None, parser: PrefixParser) -> TagChange | None:
    before = old.prefixes if old else frozenset()
    after = new.prefixes if new else frozenset()
    if old and new:
        metadata = _metadata(old, new)
        if before == after:
            if old.change_number == new.change_number and not metadata:
                return None
            status: Status = "metadata"
        else:
            status = "changed"
    else:
        metadata = {}
        status = "added" if new else "removed"
    key = parser.range  # IPv4 before IPv6, then by address: as people read them
    added, removed = after - before, before - after
    # Fresh lists per tag: the report hands them out, and no two entries may share one.
    net = (
        _net(before, after, added, removed, parser)
        if added or removed
        else {"net_added": [], "net_removed": []}
    )
    current = new or old
    assert current is not None
    return TagChange(
        id=current.id,
        system_service=current.system_service,
        region=current.region,
        status=status,
        change_number_from=old.change_number if old else None,
        change_number_to=new.change_number if new else None,
        added_prefixes=sorted(added, key=key),
        removed_prefixes=sorted(removed, key=key),
        metadata_changes=metadata,
        **net,
    )


def diff_tags(
    old: Mapping[str, ServiceTag], new: Mapping[str, ServiceTag], parser: PrefixParser
) -> list[TagChange]:
    """Every tag that differs, in tag-id order."""
    # Most tags are equal, often the very same object: tuple equality stops at identity.
    differing = [tag_id for tag_id, tag in new.items() if old.get(tag_id) != tag]
    differing += old.keys() - new.keys()
    changes = []
    for tag_id in sorted(differing):
        change = _change(old.get(tag_id), new.get(tag_id), parser)
        if change is not None:
            changes.append(change)
    return changes
