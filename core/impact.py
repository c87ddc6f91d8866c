"""Which of the user's rules a change report touches. Pure: plain data in, plain data out.

Three ways a change reaches a rule (core/rules.py reads the rules):

- **tag**: the rule names a tag whose address space changed (names compared case-insensitively,
  as Azure does: `storage.westeurope` is `Storage.WestEurope`). The finding carries what the
  tag gained and lost (the report's net ranges).
- **literal**: a literal range of the rule overlaps address space that joined or left a tag.
  One that overlaps space which left a tag is a stale copy.
- **mirror**: a literal list most of whose ranges lie inside one changed tag is a copy of it;
  the finding says what to add and remove to match the tag again (with the tag's prefixes,
  when given), and whether Azure would accept the tag itself in that field.

A firewall rule that references an IP Group touched in any of these ways is touched too.
Only address changes count (the report's `net_added`/`net_removed`): a /23 re-listed as two
/24s, or a change of metadata only, touches nothing.

Overlap is decided on CIDR blocks, which overlap only when one holds the other: the changed
blocks are indexed by (version, network, length), so a literal finds the changed blocks that
hold it by looking up its own supernets (only at the lengths that occur), and those inside it
by bisection over the blocks' starts. No pairwise comparison of rules and ranges.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from core import coverage
from core.errors import ServiceTagsError
from core.prefixes import Range, canonical_range, normalise
from core.rules import FIREWALL, ROUTE, ROUTE_TABLE, RULE_COLLECTION_GROUP, Field, Rule

SCHEMA = "servicetags.impact/v1"
REPORT_SCHEMA = "servicetags.change-report/v1"
MIRROR_MIN = 3  # a list of fewer literal ranges is not taken for a copy of a tag

Block = tuple[int, int, int]  # (version, network, length)


class ReportError(ServiceTagsError, ValueError):
    """A document that is not a change report; the message names its source."""


def check_report(doc: Any, source: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("schema") != REPORT_SCHEMA:
        raise ReportError(f'{source}: not a change report (no "schema": "{REPORT_SCHEMA}")')
    try:
        for key in ("cloud", "region"):
            if not isinstance(doc[key], str):
                raise TypeError(f"{key} is not a string")
        for side in ("from", "to"):
            str(doc[side]["changeNumber"])
        for i, tag in enumerate(doc["tags"]):
            for key in ("id", "status"):
                if not isinstance(tag[key], str):
                    raise TypeError(f"tags[{i}].{key} is not a string")
            for key in ("net_added", "net_removed"):
                if not isinstance(tag[key], list) or not all(isinstance(p, str) for p in tag[key]):
                    raise TypeError(f"tags[{i}].{key} is not a list of prefixes")
    except (KeyError, TypeError, IndexError) as exc:
        raise ReportError(f"{source}: not a change report ({type(exc).__name__}: {exc})") from None
    return doc


class _Change(NamedTuple):
    tag: str  # the tag's id as the report writes it
    direction: str  # "added" | "removed"
    block: str  # the changed block, CIDR text


def _block_of(r: Range) -> Block:
    version, start, end = r
    bits = 32 if version == 4 else 128
    return version, start, bits - (end - start).bit_length() + 1


def _range_of(text: str) -> Range:
    found = canonical_range(text) or canonical_range(normalise(text))
    assert found is not None
    return found


class ChangeIndex:
    """The report's net changes, indexed for overlap queries by CIDR block."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.tags: dict[str, dict[str, Any]] = {}  # lower-case id -> report entry
        self._by_block: dict[Block, list[_Change]] = defaultdict(list)
        self._lengths: dict[int, list[int]] = {4: [], 6: []}
        starts: dict[int, list[tuple[int, int, Block]]] = {4: [], 6: []}
        for entry in report["tags"]:
            if not (entry["net_added"] or entry["net_removed"]):
                continue  # metadata only, or the same space listed differently
            self.tags[entry["id"].lower()] = entry
            for direction, key in (("added", "net_added"), ("removed", "net_removed")):
                for text in entry[key]:
                    block = _block_of(_range_of(text))
                    if block not in self._by_block:
                        version, network, _ = block
                        starts[version].append((network, block[2], block))
                    self._by_block[block].append(_Change(entry["id"], direction, text))
        lengths: dict[int, set[int]] = {4: set(), 6: set()}
        for version, items in starts.items():
            items.sort()
            lengths[version] = {length for _, length, _ in items}
        self._lengths = {v: sorted(ls) for v, ls in lengths.items()}
        self._starts = {v: [network for network, _, _ in items] for v, items in starts.items()}
        self._blocks = {v: [block for _, _, block in items] for v, items in starts.items()}

    def overlapping(self, r: Range) -> list[_Change]:
        """The changes whose block overlaps the range (itself a CIDR block)."""
        version, start, end = r
        bits = 32 if version == 4 else 128
        own = bits - (end - start).bit_length() + 1
        out: list[_Change] = []
        by_block = self._by_block
        for length in self._lengths[version]:  # changed blocks holding it: its supernets
            if length > own:
                break
            shift = bits - length
            found = by_block.get((version, start >> shift << shift, length))
            if found:
                out.extend(found)
        starts = self._starts[version]
        i = bisect_left(starts, start)
        blocks = self._blocks[version]
        while i < len(starts) and starts[i] < end:  # changed blocks inside it
            if blocks[i][2] > own:
                out.extend(by_block[blocks[i]])
            i += 1
        return out


def _literal_finding(field: Field, text: str, changes: Iterable[_Change]) -> dict[str, Any]:
    removed_from: dict[str, list[str]] = defaultdict(list)
    added_to: dict[str, list[str]] = defaultdict(list)
    for change in changes:
        target = removed_from if change.direction == "removed" else added_to
        if change.block not in target[change.tag]:
            target[change.tag].append(change.block)
    return {
        "type": "literal",
        "field": field.name,
        "prefix": text,
        "stale": bool(removed_from),
        "removed_from": [
            {"tag": tag, "ranges": sorted(ranges)} for tag, ranges in sorted(removed_from.items())
        ],
        "added_to": [{"tag": tag, "ranges": sorted(ranges)} for tag, ranges in sorted(added_to.items())],
    }


def _literal_findings(field: Field, index: ChangeIndex) -> list[dict[str, Any]]:
    out = []
    for literal in field.literals:
        changes = [c for r in literal.ranges for c in index.overlapping(r)]
        if changes:
            out.append(_literal_finding(field, literal.text, changes))
    return out


def _tag_findings(field: Field, index: ChangeIndex) -> list[dict[str, Any]]:
    out = []
    for written in field.tags:
        entry = index.tags.get(written.lower())
        if entry is not None:
            out.append(
                {
                    "type": "tag",
                    "field": field.name,
                    "tag": entry["id"],
                    "written": written,
                    "status": entry["status"],
                    "gained": list(entry["net_added"]),
                    "lost": list(entry["net_removed"]),
                }
            )
    return out


class _Coverage(NamedTuple):
    """A changed tag's address space after the change (its prefixes) and before it."""

    names: frozenset[Block]  # its prefixes and removed blocks, for containment lookups
    sizes: dict[int, int]  # how many prefixes it lists, per IP version
    after: dict[int, list[coverage.Interval]]
    added: dict[int, list[coverage.Interval]]
    removed: dict[int, list[coverage.Interval]]

    def count(self, versions: Collection[int]) -> int:
        return sum(self.sizes[v] for v in versions)


def _intervals(ranges: Iterable[Range]) -> dict[int, list[coverage.Interval]]:
    listed = list(ranges)
    return {v: coverage.merged(listed, v) for v in (4, 6)}


class _Mirrors:
    """Finds literal lists that copy a changed tag: needs the tags' current prefixes."""

    def __init__(self, index: ChangeIndex, tag_prefixes: Mapping[str, Collection[str]], longest: int) -> None:
        self._holders: dict[Block, list[str]] = defaultdict(list)  # block -> lower-case tag ids
        self._lengths: dict[int, list[int]] = {}
        self.tags: dict[str, _Coverage] = {}
        prefixes = {name.lower(): texts for name, texts in tag_prefixes.items()}
        lengths: dict[int, set[int]] = {4: set(), 6: set()}
        for key, entry in index.tags.items():
            texts = prefixes.get(key)
            if texts is None:
                continue
            # A list copies a tag only if it is at least half as long as the tag (in the IP
            # versions it holds, see `finding`): a tag longer in both versions than twice the
            # longest list is no list's copy, and its prefixes need not be indexed.
            v6 = sum(":" in t for t in texts)
            if min(len(texts) - v6, v6) > 2 * longest:
                continue
            after = [_range_of(t) for t in texts]
            removed = [_range_of(t) for t in entry["net_removed"]]
            names = frozenset(_block_of(r) for r in [*after, *removed])
            for block in names:
                self._holders[block].append(key)
                lengths[block[0]].add(block[2])
            sizes = {4: sum(1 for r in after if r[0] == 4), 6: sum(1 for r in after if r[0] == 6)}
            self.tags[key] = _Coverage(
                names,
                sizes,
                _intervals(after),
                _intervals(map(_range_of, entry["net_added"])),
                _intervals(removed),
            )
        self._lengths = {v: sorted(ls) for v, ls in lengths.items()}

    def holders(self, r: Range) -> set[str]:
        """Changed tags with a prefix (now) or a removed block (before) that holds the range."""
        version, start, end = r
        bits = 32 if version == 4 else 128
        own = bits - (end - start).bit_length() + 1
        found: set[str] = set()
        for length in self._lengths.get(version, ()):
            if length > own:
                break
            shift = bits - length
            found.update(self._holders.get((version, start >> shift << shift, length), ()))
        return found

    def finding(
        self, field: Field, rule: Rule, report_tags: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any] | None:
        ranges = [r for literal in field.literals for r in literal.ranges]
        if len(field.literals) < MIRROR_MIN:
            return None
        votes: Counter[str] = Counter()
        for literal in field.literals:
            votes.update(set.intersection(*(self.holders(r) for r in literal.ranges)))
        versions = {r[0] for r in ranges}
        # A copy: most of the list inside the tag, and the list about as long as the tag (in
        # the IP versions it holds). Without the second test every list of Azure ranges would
        # "copy" AzureCloud. The smallest such tag is the one copied (a regional tag, not its
        # global union).
        fitting = [
            (count, -size, key)
            for key, count in votes.items()
            if count * 2 > len(field.literals)
            and len(field.literals) * 2 >= (size := self.tags[key].count(versions))
        ]
        if not fitting:
            return None
        inside_count, _, key = max(fitting)
        tag = self.tags[key]
        have = _intervals(ranges)
        # Only in the IP versions the list holds: an IPv4-only list (storage, key vault) is not
        # told to add the tag's IPv6 ranges.
        add = {v: coverage.subtract(tag.after[v], have[v]) if v in versions else [] for v in (4, 6)}
        remove = {v: coverage.subtract(have[v], tag.after[v]) for v in (4, 6)}
        # Touched by this change only when the gap lies in what the tag just gained or lost;
        # a copy that was already out of step before it is not news of this report.
        caused = any(_meets(add[v], tag.added[v]) or _meets(remove[v], tag.removed[v]) for v in (4, 6))
        if not caused:
            return None
        entry = report_tags[key]
        name = entry["id"]
        if field.tags_allowed:
            hint = f"reference the service tag {name} here instead of a copy of its ranges"
        elif rule.resource_type in (FIREWALL, RULE_COLLECTION_GROUP):
            hint = (
                f"Azure accepts service tags only as firewall network rule destinations; "
                f"there, {name} could replace this list"
            )
        else:
            hint = (
                f"Azure accepts no service tag here ({rule.kind}); keep this list in step with {name}, "
                "or filter with an NSG or firewall rule that references the tag"
            )
        return {
            "type": "mirror",
            "field": field.name,
            "tag": name,
            "inside": inside_count,
            "of": len(field.literals),
            "add": coverage.to_cidrs(add[4], 4) + coverage.to_cidrs(add[6], 6),
            "remove": coverage.to_cidrs(remove[4], 4) + coverage.to_cidrs(remove[6], 6),
            "tag_allowed_here": field.tags_allowed,
            "hint": hint,
        }


def _meets(a: list[coverage.Interval], b: list[coverage.Interval]) -> bool:
    """Whether two merged, sorted interval lists share an address."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] <= b[j][0]:
            i += 1
        elif b[j][1] <= a[i][0]:
            j += 1
        else:
            return True
    return False


def _route_tables(
    rules: Sequence[Rule], mirrors: _Mirrors, index: ChangeIndex
) -> list[tuple[Rule, list[dict[str, Any]]]]:
    """A route table copies a tag one route per prefix: its routes are looked at together."""
    tables: dict[str, list[int]] = defaultdict(list)
    for position, rule in enumerate(rules):
        if rule.resource_type in (ROUTE_TABLE, ROUTE):
            tables[rule.resource_id.lower().split("/routes/")[0]].append(position)
    out = []
    for positions in tables.values():
        first = rules[positions[0]]
        literals = tuple(lit for p in positions for f in rules[p].fields for lit in f.literals)
        table = first._replace(
            resource_id=first.resource_id.split("/routes/")[0],
            rule="routes",
            fields=(Field("routes", (), literals, (), True),),
        )
        found = mirrors.finding(table.fields[0], table, index.tags)
        if found is not None:
            out.append((table, [found]))
    return out


def _longest_list(rules: Sequence[Rule]) -> int:
    """The most literal ranges any field holds, or any route table over its routes."""
    tables: Counter[str] = Counter()
    longest = 0
    for rule in rules:
        for f in rule.fields:
            longest = max(longest, len(f.literals))
            if rule.resource_type in (ROUTE_TABLE, ROUTE):
                tables[rule.resource_id.lower().split("/routes/")[0]] += len(f.literals)
    return max([longest, *tables.values()])


def impact(
    report: Mapping[str, Any],
    rules: Sequence[Rule],
    *,
    resources: int | None = None,
    tag_prefixes: Mapping[str, Collection[str]] | None = None,
    report_name: str | None = None,
) -> dict[str, Any]:
    """The impact document of `report` on `rules`.

    `tag_prefixes`: the current prefixes of (at least) the report's changed tags, by tag id,
    e.g. from the report's new snapshot; without it, mirrors are not looked for.
    """
    index = ChangeIndex(report)
    longest = _longest_list(rules)
    mirrors = (
        _Mirrors(index, tag_prefixes, longest)
        if tag_prefixes is not None and index.tags and longest >= MIRROR_MIN
        else None
    )
    by_rule: dict[int, list[dict[str, Any]]] = {}
    groups: dict[str, tuple[Rule, list[dict[str, Any]]]] = {}  # touched IP Groups by lower-case id
    extra: list[tuple[Rule, list[dict[str, Any]]]] = []  # whole route tables
    if index.tags:
        for position, rule in enumerate(rules):
            findings: list[dict[str, Any]] = []
            for field in rule.fields:
                findings += _tag_findings(field, index)
                findings += _literal_findings(field, index)
                if mirrors is not None:
                    found = mirrors.finding(field, rule, index.tags)
                    if found is not None:
                        findings.append(found)
            if findings:
                by_rule[position] = findings
                if rule.resource_type.endswith("ipGroups"):
                    groups[rule.resource_id.lower()] = (rule, findings)
        if mirrors is not None:
            extra = _route_tables(rules, mirrors, index)
        if groups:
            for position, rule in enumerate(rules):
                via = [
                    _via_group(field, *groups[group])
                    for field in rule.fields
                    for group in field.ip_groups
                    if group in groups
                ]
                if via:
                    by_rule.setdefault(position, []).extend(via)
    affected = [_record(rules[position], findings) for position, findings in by_rule.items()]
    affected += [_record(rule, findings) for rule, findings in extra]
    affected.sort(key=lambda r: (r["resource_id"].lower(), r["rule"]))
    kinds = Counter(r["kind"] for r in affected)
    return {
        "schema": SCHEMA,
        "report": {
            "name": report_name,
            "cloud": report["cloud"],
            "region": report["region"],
            "from": report["from"]["changeNumber"],
            "to": report["to"]["changeNumber"],
        },
        "summary": {
            "rules_checked": len(rules),
            "resources_checked": len({r.resource_id.lower() for r in rules})
            if resources is None
            else resources,
            "rules_affected": len(affected),
            "stale": sum(1 for r in affected if r["stale"]),
            "by_kind": dict(sorted(kinds.items())),
            "tags_changed": sorted(entry["id"] for entry in index.tags.values()),
            "mirrors_checked": mirrors is not None,
        },
        "affected": affected,
    }


def _via_group(field: Field, group: Rule, findings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "ip_group",
        "field": field.name,
        "group": group.resource_id,
        "group_name": group.resource_name,
        "stale": any(_is_stale(f) for f in findings),
        "findings": findings,
    }


def _is_stale(finding: dict[str, Any]) -> bool:
    return bool(finding.get("stale") or (finding["type"] == "mirror" and finding["remove"]))


def _tags_of(findings: Iterable[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for f in findings:
        if "tag" in f:
            out.add(f["tag"])
        out.update(t["tag"] for t in f.get("removed_from", []) + f.get("added_to", []))
        out |= _tags_of(f.get("findings", []))
    return out


def _record(rule: Rule, findings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource_id": rule.resource_id,
        "resource_type": rule.resource_type,
        "resource_name": rule.resource_name,
        "kind": rule.kind,
        "rule": rule.rule,
        "source": rule.source,
        "stale": any(_is_stale(f) for f in findings),
        "tags": sorted(_tags_of(findings)),
        "findings": findings,
    }
