"""Address coverage of prefix sets, as sorted disjoint integer intervals.

Net change ("which addresses are newly covered") must not report a /23 replaced by its two
/24s. Working on half-open integer intervals keeps this exact and linear after a sort, and
avoids building thousands of `ipaddress` objects for the large regional tags.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from common.prefixes import Range, format_prefix

Interval = tuple[int, int]  # [start, end)


def merged(ranges: Iterable[Range], version: int) -> list[Interval]:
    """The union of the ranges of one IP version, merged and sorted."""
    out: list[Interval] = []
    last_start, last_end = -1, -1
    for start, end in sorted((s, e) for v, s, e in ranges if v == version):
        if start <= last_end:
            last_end = max(last_end, end)
        else:
            if last_end >= 0:
                out.append((last_start, last_end))
            last_start, last_end = start, end
    if last_end >= 0:
        out.append((last_start, last_end))
    return out


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Addresses in `a` and not in `b`; both merged and sorted."""
    out: list[Interval] = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        cur = start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < end:
            out.append((cur, end))
    return out


def size(intervals: Iterable[Interval]) -> int:
    return sum(end - start for start, end in intervals)


def to_cidrs(intervals: Iterable[Interval], version: int) -> list[str]:
    """The fewest CIDR blocks covering exactly the intervals, in address order."""
    bits = 32 if version == 4 else 128
    out: list[str] = []
    for first, end in intervals:
        start = first
        while start < end:
            # The largest block aligned at `start` that still fits before `end`.
            block = (start & -start) if start else 1 << bits
            while block > end - start:
                block >>= 1
            out.append(format_prefix(version, start, bits - block.bit_length() + 1))
            start += block
    return out


def overlapping(ranges: Iterable[Range], targets: dict[int, list[Interval]]) -> list[Range]:
    """The ranges that overlap any target interval of their IP version (targets merged)."""
    bounds = {v: ([s for s, _ in iv], [e for _, e in iv]) for v, iv in targets.items() if iv}
    out: list[Range] = []
    for r in ranges:
        found = bounds.get(r[0])
        if found is not None:
            starts, ends = found
            i = bisect_right(ends, r[1])  # first target ending after this range starts
            if i < len(ends) and starts[i] < r[2]:
                out.append(r)
    return out
