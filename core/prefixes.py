"""Validating, normalising and parsing CIDR prefixes, fast.

A weekly file holds about 90,000 prefixes (50,000 distinct). `ipaddress.ip_network` costs
about 4 us each, which alone would exceed the time budget of `servicetags diff`. So:
- canonical text (how Microsoft publishes every prefix) is recognised with `inet_pton` and a
  precomputed host mask per length, at well under 1 us, and each distinct string is checked
  once per process;
- anything else goes to `ipaddress`, which normalises it or says why it is invalid;
- integer ranges are built only for the prefixes the diff asks about, for coverage.
"""

from __future__ import annotations

# The C module itself: `socket` builds enums at import, a tenth of `servicetags diff`'s start-up.
from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from collections.abc import Iterable

from core.errors import InvalidPrefixError

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
    import ipaddress  # only for text not in canonical form: keeps start-up fast

    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise InvalidPrefixError(f"{text!r} is not a valid CIDR prefix ({exc})") from None
    # ipaddress takes an IPv6 zone ("fe80::%eth0/64"): an interface of one host, not a range.
    if getattr(network.network_address, "scope_id", None) is not None:
        raise InvalidPrefixError(f"{text!r} is not a valid CIDR prefix (it names an IPv6 zone)")
    normal = str(network)
    if canonical_range(normal) is None:  # pragma: no cover - ipaddress and inet_pton disagree
        raise InvalidPrefixError(f"{text!r} is not a valid CIDR prefix (no canonical form)")
    return normal


class PrefixParser:
    """Validates prefixes and gives their integer ranges.

    Snapshots repeat prefixes heavily (two weekly files share almost all of theirs), so each
    distinct string is checked once per process. Ranges are built on demand: only the
    prefixes of changed tags ever need one.
    """

    __slots__ = ("_ranges", "_valid", "renamed")

    def __init__(self) -> None:
        self._valid: set[str] = set()  # strings known to be valid prefixes
        self._ranges: dict[str, Range] = {}  # normalised strings -> range, as asked for
        self.renamed: dict[str, str] = {}  # raw -> normalised, where they differ

    def check_all(self, texts: Iterable[object]) -> None:
        """Validate every string not seen before; raises on the first invalid one."""
        new = set(texts)
        new.difference_update(self._valid)
        host4, host6, pton, ntop, from_bytes = _HOST4, _HOST6, inet_pton, inet_ntop, int.from_bytes
        odd = []  # not in canonical form, or invalid: the slow path says which
        for text in new:
            # Inlined, no call per prefix: this loop runs 50,000 times for a weekly file.
            try:
                address, _, length = text.partition("/")  # type: ignore[attr-defined]
                if ":" in address:
                    packed = pton(AF_INET6, address)
                    # inet_pton also takes upper case and uncompressed forms: not canonical.
                    if from_bytes(packed, "big") & host6[length] or ntop(AF_INET6, packed) != address:
                        odd.append(text)
                # glibc's inet_pton rejects leading zeros and short forms: what it takes is canonical.
                elif from_bytes(pton(AF_INET, address), "big") & host4[length]:
                    odd.append(text)
            except (KeyError, OSError, ValueError, TypeError, AttributeError):
                odd.append(text)
        for text in odd:
            normal = normalise(text)  # raises InvalidPrefixError naming the problem
            self.renamed[text] = normal  # type: ignore[index]
            new.add(normal)
        self._valid |= new  # type: ignore[arg-type]

    def range(self, text: str) -> Range:
        """The integer range of a normalised prefix (as held by the model)."""
        found = self._ranges.get(text)
        if found is None:
            found = canonical_range(text)
            if found is None:  # not normalised: normalise (or raise) first
                found = canonical_range(normalise(text))
                if found is None:  # pragma: no cover - normalise returns canonical text only
                    raise InvalidPrefixError(f"{text!r} has no integer range")
            self._ranges[text] = found
        return found


def format_prefix(version: int, network: int, length: int) -> str:
    if version == 4:
        return f"{inet_ntop(AF_INET, network.to_bytes(4, 'big'))}/{length}"
    return f"{inet_ntop(AF_INET6, network.to_bytes(16, 'big'))}/{length}"
