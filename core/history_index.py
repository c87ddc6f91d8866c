"""The history index: which tag held which prefix, from which change to which. Pure.

Built from each region's first snapshot and then its change reports, in change order. An
*episode* is one continuous stay of a prefix in a tag: it starts with the report that added
it (or the region's first snapshot) and ends with the report that removed it, or is still
open. Stored as one compact file, read as is by the CLI and by the browser:

    b"STHIDX1\\n", uint32 header length, JSON header, then little-endian integer arrays,
    each starting on an 8-byte boundary (typed arrays in JavaScript need that)

The header holds the change numbers with their dates, the tags, the reports and the
per-region bookkeeping the incremental update needs. The arrays hold, per address family,
the distinct CIDR blocks sorted by (network, length) with their parent block (CIDR blocks
are nested or disjoint, so they form a forest) and elementary segments (where each stretch
of address space starts, and its innermost block); then every episode. An address is found
with one bisection over the segments and a walk up the parents: at most 33 (IPv4) or 129
(IPv6) blocks, however long the history. Nothing is parsed from text at load.
"""

from __future__ import annotations

import json
import sys
from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from array import array
from bisect import bisect_left, bisect_right
from collections import namedtuple
from collections.abc import Iterable, Iterator

TYPE_CHECKING = False  # what typing.TYPE_CHECKING is at run time, without importing typing

if TYPE_CHECKING:  # `typing` costs a lookup process a tenth of its budget at start
    from typing import Any, NamedTuple

SCHEMA = "servicetags.history-index/v1"
MAGIC = b"STHIDX1\n"
OPEN = 0xFFFFFFFF  # an episode still running
NO_REPORT = 0xFFFFFFFF  # present in the region's first snapshot: no report said it
_MASK64 = (1 << 64) - 1
_BITS = {4: 32, 6: 128}
_LITTLE = sys.byteorder == "little"
_ITEMSIZE = {"B": 1, "i": 4, "I": 4, "Q": 8}


class IndexError_(ValueError):
    """An index file that cannot be read."""


class QueryError(ValueError):
    """A lookup that is not an address, a CIDR block or a known tag."""


Block = tuple[int, int, int]  # (version, network as an integer, prefix length)


def parse_block(text: str) -> Block:
    """A prefix as listed (normalised) or an address: (version, network, length). Host bits
    of a CIDR query are cleared (what it covers is what matters); anything else is a
    QueryError naming the text."""
    address, slash, length_text = text.strip().partition("/")
    family, version = (AF_INET6, 6) if ":" in address else (AF_INET, 4)
    try:
        value = int.from_bytes(inet_pton(family, address), "big")
    except (OSError, ValueError):
        raise QueryError(f"{text!r} is not an IPv4 or IPv6 address or CIDR block") from None
    bits = _BITS[version]
    if slash:
        if not length_text.isdigit() or not 0 <= int(length_text) <= bits:
            raise QueryError(f"{text!r}: the prefix length must be 0 to {bits}")
        length = int(length_text)
    else:
        length = bits
    host = (1 << (bits - length)) - 1
    return version, value & ~host, length


def block_text(block: Block) -> str:
    """The prefix as Microsoft lists it (inet_ntop writes IPv6 in RFC 5952 form, as ipaddress)."""
    version, net, length = block
    if version == 4:
        return f"{inet_ntop(AF_INET, net.to_bytes(4, 'big'))}/{length}"
    return f"{inet_ntop(AF_INET6, net.to_bytes(16, 'big'))}/{length}"


def change_key(change_number: str) -> tuple[int, int, str]:
    """Change numbers sort as numbers (they are, in every cloud); anything else after them."""
    return (0, int(change_number), "") if change_number.isdigit() else (1, 0, change_number)


# --------------------------------------------------------------------------------------
# Building


class Builder:
    """The index as plain Python data, to extend; `to_bytes` writes the compact file."""

    def __init__(self, cloud: str) -> None:
        self.cloud = cloud
        self.dates: dict[str, str] = {}
        self.tags: list[list[str]] = []  # [id, region, system_service]
        self._tag_ix: dict[str, int] = {}
        self.reports: list[list[Any]] = []  # [name, region, from, to, added, removed, tags]
        self._report_ix: dict[str, int] = {}
        self.regions: dict[str, dict[str, Any]] = {}  # region -> sha, changeNumber, baseline
        # [version, net, length, tag, from cn, to cn or None, joined by, left by]
        self.episodes: list[list[Any]] = []
        self._open: dict[tuple[int, int, int, int], int] = {}

    # -- state

    def has_report(self, name: str) -> bool:
        return name in self._report_ix

    def change_numbers(self) -> set[str]:
        found = {r["changeNumber"] for r in self.regions.values()}
        found.update(r["baseline"] for r in self.regions.values())
        for report in self.reports:
            found.update((report[2], report[3]))
        return found

    def _tag(self, tag_id: str, region: str, service: str) -> int:
        ix = self._tag_ix.get(tag_id)
        if ix is None:
            ix = self._tag_ix[tag_id] = len(self.tags)
            self.tags.append([tag_id, region, service])
        else:
            self.tags[ix][1:] = [region, service]
        return ix

    def _join(self, tag: int, prefix: str, change: str, report: int) -> None:
        version, net, length = parse_block(prefix)
        key = (tag, version, net, length)
        if key in self._open:
            return  # already there (a report applied twice, or a baseline overlap)
        self._open[key] = len(self.episodes)
        self.episodes.append([version, net, length, tag, change, None, report, NO_REPORT])

    def _leave(self, tag: int, prefix: str, change: str, report: int) -> None:
        version, net, length = parse_block(prefix)
        ix = self._open.pop((tag, version, net, length), None)
        if ix is not None:
            self.episodes[ix][5] = change
            self.episodes[ix][7] = report

    # -- input

    def baseline(
        self, *, region: str, change_number: str, sha256: str, tags: Iterable[tuple[str, str, Iterable[str]]]
    ) -> None:
        """A region's first snapshot: (tag id, system service, prefixes) for each tag."""
        for tag_id, service, prefixes in tags:
            tag = self._tag(tag_id, region, service)
            for prefix in prefixes:
                self._join(tag, prefix, change_number, NO_REPORT)
        self.regions[region] = {
            "sha256": sha256,
            "changeNumber": change_number,
            "baseline": change_number,
            "report": None,
        }

    def apply_report(self, name: str, report: dict[str, Any]) -> bool:
        """One change report (the servicetags.change-report/v1 document); False if known."""
        if name in self._report_ix:
            return False
        region = report["region"]
        old, new = report["from"]["changeNumber"], report["to"]["changeNumber"]
        summary = report.get("summary", {})
        ix = self._report_ix[name] = len(self.reports)
        self.reports.append(
            [
                name,
                region,
                old,
                new,
                summary.get("prefixes_added", 0),
                summary.get("prefixes_removed", 0),
                len(report.get("tags", ())),
            ]
        )
        for entry in report.get("tags", ()):
            tag = self._tag(entry["id"], region, entry.get("system_service", ""))
            for prefix in entry.get("removed_prefixes", ()):
                self._leave(tag, prefix, new, ix)
            for prefix in entry.get("added_prefixes", ()):
                self._join(tag, prefix, new, ix)
        state = self.regions.setdefault(region, {"baseline": old})
        state.update({"sha256": report["to"]["sha256"], "changeNumber": new, "report": name})
        return True

    def set_date(self, change_number: str, date: str) -> None:
        self.dates[change_number] = date

    # -- output

    def to_bytes(self) -> bytes:
        changes = sorted(self.change_numbers() | set(self.dates), key=change_key)
        order = {cn: i for i, cn in enumerate(changes)}
        episodes = sorted(self.episodes, key=lambda e: (e[0], e[1], e[2], order[e[4]], e[3]))
        arrays: list[tuple[str, array[int]]] = []
        first_all: list[int] = []
        for version in (4, 6):
            mine = [e for e in episodes if e[0] == version]
            offset = len(first_all) and first_all[-1]
            blocks: list[tuple[int, int]] = []
            first: list[int] = []
            for i, e in enumerate(mine):
                if not blocks or blocks[-1] != (e[1], e[2]):
                    blocks.append((e[1], e[2]))
                    first.append(offset + i)
            first.append(offset + len(mine))
            first_all = first
            arrays += _family_arrays(version, blocks, first)
        arrays += [
            ("ep_tag", array("I", (e[3] for e in episodes))),
            ("ep_from", array("I", (order[e[4]] for e in episodes))),
            ("ep_to", array("I", (OPEN if e[5] is None else order[e[5]] for e in episodes))),
            ("ep_join", array("I", (e[6] for e in episodes))),
            ("ep_leave", array("I", (e[7] for e in episodes))),
        ]
        header = {
            "schema": SCHEMA,
            "cloud": self.cloud,
            "changes": [[cn, self.dates.get(cn, "")] for cn in changes],
            "tags": self.tags,
            "reports": self.reports,
            "regions": {k: self.regions[k] for k in sorted(self.regions)},
        }
        return _pack(header, arrays)

    @classmethod
    def from_index(cls, index: Index) -> Builder:
        """The builder an index was written from, to extend it."""
        b = cls(index.cloud)
        cns = [cn for cn, _ in index.changes]
        b.dates = {cn: date for cn, date in index.changes if date}
        b.tags = [list(t) for t in index.tags]
        b._tag_ix = {t[0]: i for i, t in enumerate(b.tags)}
        b.reports = [list(r) for r in index.reports]
        b._report_ix = {r[0]: i for i, r in enumerate(b.reports)}
        b.regions = {k: dict(v) for k, v in index.regions.items()}
        for family in (index.v4, index.v6):
            for blk in range(family.count):
                net, length = family.network(blk), family.plen[blk]
                for e in range(family.first[blk], family.first[blk + 1]):
                    to = index.ep_to[e]
                    episode = [
                        family.version,
                        net,
                        length,
                        index.ep_tag[e],
                        cns[index.ep_from[e]],
                        None if to == OPEN else cns[to],
                        index.ep_join[e],
                        index.ep_leave[e],
                    ]
                    if to == OPEN:
                        b._open[(index.ep_tag[e], family.version, net, length)] = len(b.episodes)
                    b.episodes.append(episode)
        return b


def _family_arrays(
    version: int, blocks: list[tuple[int, int]], first: list[int]
) -> list[tuple[str, array[int]]]:
    bits = _BITS[version]
    parent = array("i")
    seg_lo: list[int] = []
    seg_blk = array("i")
    stack: list[int] = []
    top = (1 << bits) - 1

    def end(b: int) -> int:
        net, length = blocks[b]
        return net + (1 << (bits - length)) - 1

    def emit(position: int, block: int) -> None:
        if position > top:
            return
        if seg_lo and seg_lo[-1] == position:
            seg_blk[-1] = block
        else:
            seg_lo.append(position)
            seg_blk.append(block)

    for b, (net, _) in enumerate(blocks):
        while stack and end(stack[-1]) < net:
            done = stack.pop()
            emit(end(done) + 1, stack[-1] if stack else -1)
        parent.append(stack[-1] if stack else -1)
        emit(net, b)
        stack.append(b)
    while stack:
        done = stack.pop()
        emit(end(done) + 1, stack[-1] if stack else -1)
    p = f"v{version}_"
    nets = [n for n, _ in blocks]
    out: list[tuple[str, array[int]]] = []
    if version == 4:
        out += [(p + "net", array("I", nets)), (p + "seg", array("I", seg_lo))]
    else:
        out += [
            (p + "net_hi", array("Q", (n >> 64 for n in nets))),
            (p + "net_lo", array("Q", (n & _MASK64 for n in nets))),
            (p + "seg_hi", array("Q", (n >> 64 for n in seg_lo))),
            (p + "seg_lo", array("Q", (n & _MASK64 for n in seg_lo))),
        ]
    out += [
        (p + "len", array("B", (length for _, length in blocks))),
        (p + "parent", parent),
        (p + "first", array("I", first)),
        (p + "seg_blk", seg_blk),
    ]
    return out


def _pack(header: dict[str, Any], arrays: list[tuple[str, array[int]]]) -> bytes:
    layout = []
    offset = 0
    for name, values in arrays:
        layout.append([name, values.typecode, offset, len(values)])
        offset += _pad8(len(values) * values.itemsize)
    head = json.dumps({**header, "arrays": layout}, separators=(",", ":"), ensure_ascii=False).encode()
    start = _pad8(len(MAGIC) + 4 + len(head))
    out = bytearray(MAGIC + len(head).to_bytes(4, "little") + head)
    out += b" " * (start - len(out))  # JSON whitespace: the header stays valid JSON
    for _, values in arrays:
        stored = values
        if not _LITTLE:
            stored = array(values.typecode, values)
            stored.byteswap()
        raw = stored.tobytes()
        out += raw + b"\0" * (_pad8(len(raw)) - len(raw))
    return bytes(out)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


# --------------------------------------------------------------------------------------
# Reading and asking


if TYPE_CHECKING:

    class Hit(NamedTuple):
        tag: str
        region: str
        system_service: str
        prefix: str
        since_change: str
        since_date: str
        since_report: str | None  # None: present in the region's first snapshot

    class Event(NamedTuple):
        kind: str  # joined | left
        change_number: str
        date: str
        tag: str
        region: str
        system_service: str
        prefix: str
        report: str | None  # the report that said it; None for the first snapshot
else:
    Hit = namedtuple("Hit", "tag region system_service prefix since_change since_date since_report")
    Event = namedtuple("Event", "kind change_number date tag region system_service prefix report")


class Family:
    """One address family's blocks and segments, as stored."""

    def __init__(self, version: int, arrays: dict[str, Any]) -> None:
        p = f"v{version}_"
        self.version, self.bits = version, _BITS[version]
        self.plen = arrays[p + "len"]
        self.parent = arrays[p + "parent"]
        self.first = arrays[p + "first"]
        self.seg_blk = arrays[p + "seg_blk"]
        self.count = len(self.plen)
        self._arrays, self._p = arrays, p
        self._seg: Any = None
        self._net: Any = None
        self._text: dict[int, str] = {}
        self.current: dict[int, list[Any]] = {}  # block -> its stays at the latest change

    def text(self, block: int) -> str:
        found = self._text.get(block)
        if found is None:
            found = self._text[block] = block_text((self.version, self.network(block), self.plen[block]))
        return found

    @property
    def seg(self) -> Any:
        if self._seg is None:
            a = self._arrays
            self._seg = (
                a["v4_seg"]
                if self.version == 4
                else [h << 64 | lo for h, lo in zip(a["v6_seg_hi"], a["v6_seg_lo"], strict=True)]
            )
        return self._seg

    @property
    def nets(self) -> Any:
        if self._net is None:
            a = self._arrays
            self._net = (
                a["v4_net"]
                if self.version == 4
                else [h << 64 | lo for h, lo in zip(a["v6_net_hi"], a["v6_net_lo"], strict=True)]
            )
        return self._net

    def network(self, block: int) -> int:
        return int(self.nets[block])

    def end(self, block: int) -> int:
        end: int = int(self.nets[block]) + (1 << (self.bits - self.plen[block])) - 1
        return end

    def containing(self, address: int) -> Iterator[int]:
        """Every block that holds the address, innermost first."""
        s = bisect_right(self.seg, address) - 1
        b = self.seg_blk[s] if s >= 0 else -1
        parent = self.parent
        while b >= 0:
            yield b
            b = parent[b]

    def overlapping(self, net: int, length: int) -> list[int]:
        last = net + (1 << (self.bits - length)) - 1
        found = [b for b in self.containing(net) if self.end(b) >= last]
        nets = self.nets
        seen = set(found)
        found += [b for b in range(bisect_left(nets, net), bisect_right(nets, last)) if b not in seen]
        return found


class Index:
    def __init__(self, header: dict[str, Any], arrays: dict[str, Any]) -> None:
        self.cloud: str = header["cloud"]
        self.changes: list[tuple[str, str]] = [(cn, date) for cn, date in header["changes"]]
        self.tags: list[list[str]] = header["tags"]
        self.reports: list[list[Any]] = header["reports"]
        self.regions: dict[str, dict[str, Any]] = header["regions"]
        self.v4, self.v6 = Family(4, arrays), Family(6, arrays)
        self.ep_tag, self.ep_from, self.ep_to = arrays["ep_tag"], arrays["ep_from"], arrays["ep_to"]
        self.ep_join, self.ep_leave = arrays["ep_join"], arrays["ep_leave"]

    @classmethod
    def from_bytes(cls, data: Any, source: str = "index") -> Index:
        """From bytes or any buffer (an mmap: the arrays stay views on it)."""
        if data[: len(MAGIC)] != MAGIC:
            raise IndexError_(f"{source}: not a servicetags history index")
        try:
            size = int.from_bytes(data[8:12], "little")
            header = json.loads(data[12 : 12 + size])
            if header.get("schema") != SCHEMA:
                raise IndexError_(f"{source}: index schema {header.get('schema')!r}, expected {SCHEMA}")
            start = _pad8(12 + size)
            arrays: dict[str, Any] = {}
            view = memoryview(data)
            for name, typecode, offset, count in header["arrays"]:
                begin = start + offset
                size = count * _ITEMSIZE[typecode]
                if _LITTLE:
                    # A view on the file's bytes: nothing is copied or converted at load.
                    arrays[name] = view[begin : begin + size].cast(typecode)
                else:
                    values = array(typecode)
                    values.frombytes(view[begin : begin + size])
                    values.byteswap()
                    arrays[name] = values
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, IndexError_):
                raise
            raise IndexError_(f"{source}: damaged index ({exc})") from None
        return cls(header, arrays)

    @property
    def empty(self) -> bool:
        return not self.changes

    def family(self, version: int) -> Family:
        return self.v4 if version == 4 else self.v6

    # -- time

    def latest(self) -> int:
        return len(self.changes) - 1

    def change_index(self, change_number: str) -> int:
        for i, (cn, _) in enumerate(self.changes):
            if cn == change_number:
                return i
        first, last = self.changes[0][0], self.changes[-1][0]
        raise QueryError(f"change {change_number} is not in the history (it has {first} to {last})")

    def at_date(self, date: str) -> int:
        """The last change recorded on or before `date` (YYYY-MM-DD or ISO time)."""
        found = -1
        for i, (_, when) in enumerate(self.changes):
            if when and when[: len(date)] <= date:
                found = i
        if found < 0:
            raise QueryError(
                f"{date} is before the history, which starts on {self.changes[0][1][:10]} "
                f"(change {self.changes[0][0]})"
            )
        return found

    # -- questions

    def lookup(self, query: str, *, at: int | None = None) -> list[Hit]:
        """Every tag holding (or overlapping) the address or block at change `at` (default:
        the latest), with the prefix and the start of its current stay."""
        if at is None and "/" not in query:
            # A bare address, now: the path warm lookups take, without the general parser.
            try:
                if ":" in query:
                    return self.lookup_block(
                        6, int.from_bytes(inet_pton(AF_INET6, query), "big"), 128, at=len(self.changes) - 1
                    )
                return self.lookup_block(
                    4, int.from_bytes(inet_pton(AF_INET, query), "big"), 32, at=len(self.changes) - 1
                )
            except OSError:
                pass  # parse_block says what is wrong with it
        version, net, length = parse_block(query)
        return self.lookup_block(version, net, length, at=self.latest() if at is None else at)

    def lookup_block(self, version: int, net: int, length: int, *, at: int) -> list[Hit]:
        family = self.family(version)
        if length == family.bits and at == len(self.changes) - 1:
            # The common question (an address, now): each block's current stays are worked out
            # once and kept, so a warm lookup is a bisection and a walk up the parents.
            hits: list[Hit] = []
            current, parent = family.current, family.parent
            s = bisect_right(family.seg, net) - 1
            b = family.seg_blk[s] if s >= 0 else -1
            while b >= 0:
                found = current.get(b)
                if found is None:
                    found = current[b] = self._stays(family, b, at)
                hits += found
                b = parent[b]
            return hits
        blocks = family.containing(net) if length == family.bits else family.overlapping(net, length)
        return [hit for b in blocks for hit in self._stays(family, b, at)]

    def _stays(self, family: Family, block: int, at: int) -> list[Hit]:
        ep_from, ep_to = self.ep_from, self.ep_to
        return [
            self._hit(family, block, e)
            for e in range(family.first[block], family.first[block + 1])
            if ep_from[e] <= at < ep_to[e]
        ]

    def count_hits(self, version: int, address: int, at: int) -> int:
        """How many stays hold the address: the lookup without building results (benches)."""
        family = self.family(version)
        first, ep_from, ep_to = family.first, self.ep_from, self.ep_to
        n = 0
        for b in family.containing(address):
            for e in range(first[b], first[b + 1]):
                if ep_from[e] <= at < ep_to[e]:
                    n += 1
        return n

    def _hit(self, family: Family, block: int, e: int) -> Hit:
        tag_id, region, service = self.tags[self.ep_tag[e]]
        cn, date = self.changes[self.ep_from[e]]
        join = self.ep_join[e]
        return Hit(
            tag_id,
            region,
            service,
            family.text(block),
            cn,
            date,
            None if join == NO_REPORT else self.reports[join][0],
        )

    def history(self, query: str, *, since: int = 0) -> list[Event]:
        """Every join and leave of the blocks holding or overlapping an address or CIDR, or of
        a tag (by name, any case), in change order."""
        try:
            version, net, length = parse_block(query)
        except QueryError:
            tag = self.tag_number(query)
            if tag is None:
                raise QueryError(
                    f"{query!r} is not an address, a CIDR block or a tag in the history"
                ) from None
            return self._events(self._tag_episodes(tag), since)
        family = self.family(version)
        blocks = family.containing(net) if length == family.bits else family.overlapping(net, length)
        first = family.first
        return self._events(((family, b, e) for b in blocks for e in range(first[b], first[b + 1])), since)

    def tag_number(self, name: str) -> int | None:
        key = name.strip().lower()
        for i, (tag_id, _, _) in enumerate(self.tags):
            if tag_id.lower() == key:
                return i
        return None

    def _tag_episodes(self, tag: int) -> Iterator[tuple[Family, int, int]]:
        wanted = [e for e, t in enumerate(self.ep_tag) if t == tag]
        for family in (self.v4, self.v6):
            for e in wanted:
                lo, hi = family.first[0], family.first[-1]
                if lo <= e < hi:
                    yield family, bisect_right(family.first, e) - 1, e

    def _events(self, episodes: Iterable[tuple[Family, int, int]], since: int) -> list[Event]:
        out = []
        for family, b, e in episodes:
            tag_id, region, service = self.tags[self.ep_tag[e]]
            prefix = family.text(b)
            start, end = self.ep_from[e], self.ep_to[e]
            if start >= since:
                join = self.ep_join[e]
                cn, date = self.changes[start]
                out.append(
                    (
                        start,
                        0,
                        Event(
                            "joined",
                            cn,
                            date,
                            tag_id,
                            region,
                            service,
                            prefix,
                            None if join == NO_REPORT else self.reports[join][0],
                        ),
                    )
                )
            if end != OPEN and end >= since:
                cn, date = self.changes[end]
                out.append(
                    (
                        end,
                        1,
                        Event(
                            "left",
                            cn,
                            date,
                            tag_id,
                            region,
                            service,
                            prefix,
                            self.reports[self.ep_leave[e]][0],
                        ),
                    )
                )
        out.sort(key=lambda x: (x[0], x[2].tag, x[1], x[2].prefix))
        return [event for _, _, event in out]

    # -- for pages

    def weekly_counts(self) -> list[tuple[str, int, int]]:
        """(ISO week "YYYY-Www", prefixes added, prefixes removed) from the reports."""
        import datetime as dt

        date_of = dict(self.changes)
        weeks: dict[str, list[int]] = {}
        for _, _, _, to, added, removed, _ in self.reports:
            date = date_of.get(to, "")
            if not date:
                continue
            year, week, _ = dt.date.fromisoformat(date[:10]).isocalendar()
            slot = weeks.setdefault(f"{year}-W{week:02d}", [0, 0])
            slot[0] += added
            slot[1] += removed
        return [(week, a, r) for week, (a, r) in sorted(weeks.items())]


def empty_index(cloud: str) -> bytes:
    return Builder(cloud).to_bytes()
