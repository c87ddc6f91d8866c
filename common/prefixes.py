"""Validating, normalising and parsing CIDR prefixes, fast.

A weekly file holds about 90,000 prefixes (50,000 distinct). `ipaddress.ip_network` costs
about 4 us each, which alone would exceed the time budget of `servicetags diff`. So:
- canonical text (how Microsoft publishes every prefix) is recognised with `inet_pton` and a
  precomputed host mask per length, at well under 1 us, and each distinct string is checked
  once per process;
- anything else goes to `ipaddress`, which normalises it or says why it is invalid;
- integer ranges are built only for the prefixes of changed tags, for coverage.
"""

from __future__ import annotations

import ipaddress

# The C module itself: `socket` builds enums at import, a tenth of `servicetags diff`'s start-up.
from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from collections.abc import Callable, Iterable

from common.errors import InvalidPrefixError

_HOST4 = {str(n): (1 << (32 - n)) - 1 for n in range(33)}
_HOST6 = {str(n): (1 << (128 - n)) - 1 for n in range(129)}

# (version, first address, one past the last address), as integers.
Range = tuple[int, int, int]


def canonical_range(text: str) -> Range | None:
    """The integer range of `text` when it is a valid prefix in normalised form, else None."""
    address, _, length = text.partition("/")
    try:
        if ":" in address:
            mask = _HOST6.get(length)
            if mask is None:
                return None
            packed = inet_pton(AF_INET6, address)
            network = int.from_bytes(packed, "big")
            # inet_pton also takes upper case and uncompressed forms, which need normalising.
            if network & mask or inet_ntop(AF_INET6, packed) != address:
                return None
            return (6, network, network + mask + 1)
        mask = _HOST4.get(length)
        if mask is None:
            return None
        # glibc's inet_pton rejects leading zeros and short forms: what it takes is canonical.
        network = int.from_bytes(inet_pton(AF_INET, address), "big")
        if network & mask:
            return None
        return (4, network, network + mask + 1)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def normalise(text: object) -> str:
    """The normalised form of a prefix, or InvalidPrefixError saying what is wrong."""
    if not isinstance(text, str):
        raise InvalidPrefixError(f"{text!r} is not a string")
    if canonical_range(text) is not None:
        return text
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise InvalidPrefixError(f"{text!r} is not a valid CIDR prefix ({exc})") from None


class PrefixParser:
    """Validates prefixes and remembers each one's integer range.

    Snapshots repeat prefixes heavily (two weekly files share almost all of theirs), so each
    distinct string is checked once per process, and the diff reads ranges from the table.
    """

    __slots__ = ("_checked", "_keep_ranges", "_ranges", "renamed")

    def __init__(self, *, keep_ranges: bool = True) -> None:
        """`keep_ranges=False` remembers only which strings are valid (a long-running worker
        sees every prefix of the cloud but needs ranges only for the few that change)."""
        self._keep_ranges = keep_ranges
        self._ranges: dict[str, Range] = {}    # raw and normalised strings -> range
        self._checked: set[str] = set()        # valid strings whose range was not kept
        self.renamed: dict[str, str] = {}      # raw -> normalised, where they differ

    def check_all(self, texts: Iterable[object]) -> None:
        """Validate every string not seen before; raises on the first invalid one."""
        new = set(texts).difference(self._ranges)
        if not self._keep_ranges:
            new -= self._checked
            ranges: dict[str, Range] = {}
        else:
            ranges = self._ranges
        host4, pton, from_bytes = _HOST4, inet_pton, int.from_bytes
        for text in new:
            # The common case inlined (IPv4, canonical): a function call per prefix costs 10 ms.
            if type(text) is str and ":" not in text:
                address, _, length = text.partition("/")
                mask = host4.get(length)
                if mask is not None:
                    try:
                        network = from_bytes(pton(AF_INET, address), "big")
                    except OSError:
                        network = -1
                    if network >= 0 and not network & mask:
                        ranges[text] = (4, network, network + mask + 1)
                        continue
            found = canonical_range(text)  # type: ignore[arg-type]
            if found is None:
                normal = normalise(text)
                found = canonical_range(normal)
                assert found is not None
                self.renamed[text] = normal  # type: ignore[index]
                ranges[normal] = found
            ranges[text] = found  # type: ignore[index]
        if not self._keep_ranges:
            self._checked.update(ranges)

    def range(self, text: str) -> Range:
        """The integer range of a normalised prefix (as held by the model)."""
        try:
            return self._ranges[text]
        except KeyError:
            found = canonical_range(text)
            if found is None:  # not normalised: normalise (or raise) first
                found = canonical_range(normalise(text))
                assert found is not None
            self._ranges[text] = found
            return found

    def getter(self) -> Callable[[str], Range]:
        """A fast `range` for strings this parser validated (the dict's own lookup, no Python
        call per prefix), or `range` when only the set of valid strings was kept."""
        return self._ranges.__getitem__ if self._keep_ranges and not self._checked else self.range

    def sort_key(self) -> Callable[[str], Range]:
        """Orders prefixes as people read them: IPv4 before IPv6, then by address."""
        return self.range


def format_prefix(version: int, network: int, length: int) -> str:
    if version == 4:
        return f"{inet_ntop(AF_INET, network.to_bytes(4, 'big'))}/{length}"
    return f"{inet_ntop(AF_INET6, network.to_bytes(16, 'big'))}/{length}"
