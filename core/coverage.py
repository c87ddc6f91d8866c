"""Address coverage of prefix sets, as sorted disjoint integer intervals.

Net change ("which addresses are newly covered") must not report a /23 replaced by its two
/24s. Working on half-open integer intervals keeps this exact and linear after a sort, and
avoids building thousands of `ipaddress` objects for the large regional tags.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable
from functools import lru_cache
from operator import methodcaller

from core.prefixes import Range, format_prefix

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


def blocks(intervals: Iterable[Interval], version: int) -> list[tuple[int, int]]:
    """The fewest CIDR blocks covering exactly the intervals, as (network, length), in order."""
    bits = 32 if version == 4 else 128
    out: list[tuple[int, int]] = []
    for first, end in intervals:
        start = first
        while start < end:
            # The largest block aligned at `start` that still fits before `end`.
            block = (start & -start) if start else 1 << bits
            while block > end - start:
                block >>= 1
            out.append((start, bits - block.bit_length() + 1))
            start += block
    return out


def to_cidrs(intervals: Iterable[Interval], version: int) -> list[str]:
    return [format_prefix(version, network, length) for network, length in blocks(intervals, version)]


_FINE = 16  # at most this many stems per block; past it, one stem an octet shorter
_SCAN = 4  # up to this many stems, one pass over the texts beats sorting them


def _probes(version: int, network: int, length: int) -> tuple[list[str], tuple[str, ...]] | None:
    """Where to look for the canonical prefixes overlapping a block: the text stems of those
    inside it (whole leading octets, or non-zero hextets: IPv6 writes zero runs as `::`) and
    the names of its supernets shorter than the stems. None: anything may overlap."""
    if version == 4:
        octets = [network >> 24 & 255, network >> 16 & 255, network >> 8 & 255, network & 255]
        fixed = min(length // 8, 3)  # leading octets every address of the block shares
        head = "".join(f"{o}." for o in octets[:fixed])
        span = 1 << (8 * (fixed + 1) - length) if fixed < 3 else 0  # values of the next octet
        if 0 < span <= _FINE:
            stems = [f"{head}{o}." for o in range(octets[fixed], octets[fixed] + span)]
            stem_bits = 8 * (fixed + 1)
        elif fixed:
            stems, stem_bits = [head], 8 * fixed
        else:
            return None
        return stems, _supernets(4, network >> (32 - stem_bits), stem_bits, min(length, stem_bits))
    h1, h2 = network >> 112, network >> 96 & 0xFFFF
    if length >= 32 and h1 and h2:
        stem, stem_bits = f"{h1:x}:{h2:x}:", 32
    elif length >= 16 and h1:
        stem, stem_bits = f"{h1:x}:", 16
    else:
        return None
    return [stem], _supernets(6, network >> (128 - stem_bits), stem_bits, stem_bits)


@lru_cache(maxsize=4096)
def _supernets(version: int, top: int, top_bits: int, count: int) -> tuple[str, ...]:
    """The names of the prefixes of lengths 0 to count-1 containing the addresses whose first
    `top_bits` bits are `top`: blocks close together share them, so they are made once."""
    bits = 32 if version == 4 else 128
    network = top << (bits - top_bits)
    name = _name4 if version == 4 else _name6
    return tuple(name(network >> (bits - k) << (bits - k), k) for k in range(count))


def _name4(network: int, length: int) -> str:
    return f"{network >> 24}.{network >> 16 & 255}.{network >> 8 & 255}.{network & 255}/{length}"


def _name6(network: int, length: int) -> str:
    """Canonical text of an IPv6 prefix of at most 32 bits: the rest is one zero run, `::`."""
    h1, h2 = network >> 112, network >> 96 & 0xFFFF
    if h2:
        return f"{h1:x}:{h2:x}::/{length}"
    return f"{h1:x}::/{length}" if h1 else f"::/{length}"


def candidates(
    texts: Collection[str], targets: dict[int, list[Interval]], direct: int = 32
) -> Collection[str]:
    """The prefixes of `texts` (canonical text) that may overlap a target interval: a small
    superset of those that do, found without computing a range for every prefix.

    Two CIDR blocks overlap only when one contains the other. So a prefix overlapping a
    target block lies inside it, and then its text starts with one of the block's stems
    (found by bisection in the sorted texts), or strictly contains it, and then it is one of
    the block's supernets, looked up by name. A big regional tag holds 12,000 prefixes; a
    weekly change touches a few dozen blocks. With fewer than `direct` texts per block, all
    are candidates; with few stems, a pass over the texts replaces the sort.
    """
    wanted = [
        (v, network, length) for v, intervals in targets.items() for network, length in blocks(intervals, v)
    ]
    if len(texts) <= direct * len(wanted):
        return texts
    probes = [_probes(*block) for block in wanted]
    if None in probes:
        return texts
    stems = {stem for stems, _ in probes for stem in stems}  # type: ignore[misc]
    found = {name for _, names in probes for name in names if name in texts}  # type: ignore[misc]
    if len(stems) <= _SCAN:
        found.update(filter(methodcaller("startswith", tuple(stems)), texts))
        return found
    ordered = sorted(texts)
    for stem in stems:
        # Stems end in "." or ":"; the next character bounds every text that starts with it.
        lo = bisect_left(ordered, stem)
        found.update(ordered[lo : bisect_left(ordered, stem[:-1] + chr(ord(stem[-1]) + 1), lo)])
    return found


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
