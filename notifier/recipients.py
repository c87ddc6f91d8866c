"""Who gets which part of a change report: parsing `SERVICETAGS_RECIPIENTS` and filtering reports.

Pure: no I/O. The setting is either a JSON list of objects

    [{"address": "net@example.com", "name": "Network team"},
     {"address": "app@example.com", "regions": ["japaneast", "global"],
      "tags": ["Storage*", "AzureCloud.japaneast"]}]

or a plain comma-separated list of addresses (each gets everything). `regions` are matched
against the report's `region` field (ARM location names, `global`, `all`); `tags` are
case-insensitive fnmatch patterns matched against each tag's id and its system service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr
from fnmatch import fnmatchcase
from typing import Any, Protocol

from core.errors import ServiceTagsError
from core.json_input import JsonInputError, load_json
from core.report import summarise, tag_address_counts

SETTING = "SERVICETAGS_RECIPIENTS"
_KEYS = ("address", "name", "regions", "tags", "services", "delivery", "min_addresses", "family")
FILTER_KEYS = ("regions", "tags", "services", "min_addresses", "family")
DELIVERIES = ("digest", "report")
FAMILIES = ("ipv4", "ipv6")
SLASH64 = 2**64  # IPv6 sizes are counted in /64 networks, the unit a subnet is made of
# Deliberately simple: one @, no whitespace, brackets or separators. Anything cleverer belongs
# to the mail server, which rejects what it cannot deliver (a permanent error, poisoned).
_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+\.[^@\s<>,;:\"()\[\]\\]+$")


class RecipientsError(ServiceTagsError):
    """An invalid `SERVICETAGS_RECIPIENTS` value; the message names the entry and the problem."""


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str = ""
    regions: frozenset[str] | None = None  # None: every region
    tags: tuple[str, ...] | None = None  # lowercased fnmatch patterns; None: every tag
    delivery: str = "digest"  # digest: one message per run; report: one per report
    services: tuple[str, ...] | None = None  # lowercased fnmatch patterns on systemService
    min_addresses: int = 0  # per tag: IPv4 addresses or IPv6 /64s changed, at least
    family: str | None = None  # ipv4 | ipv6: only that family's prefixes

    def wants_region(self, region: str) -> bool:
        return self.regions is None or region.lower() in self.regions

    def wants_tag(self, tag: dict[str, Any]) -> bool:
        return tag_matches(tag, services=self.services, tags=self.tags)


def tag_matches(
    tag: dict[str, Any], *, services: tuple[str, ...] | None, tags: tuple[str, ...] | None
) -> bool:
    """A report tag against a recipient's or channel's filters (lowercased fnmatch patterns)."""
    if services is not None and not any(fnmatchcase(tag["system_service"].lower(), p) for p in services):
        return False
    if tags is None:
        return True
    names = [tag["id"].lower(), *([tag["system_service"].lower()] if tag["system_service"] else [])]
    return any(fnmatchcase(n, p) for n in names for p in tags)


def _fail(where: str, problem: str) -> RecipientsError:
    return RecipientsError(f"{SETTING}: {where}: {problem}")


def _address(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, "'address' must be a non-empty string")
    address = value.strip()
    _, parsed = parseaddr(address)
    if parsed != address or not _ADDRESS.match(address):
        raise _fail(where, f"{address!r} is not a plain e-mail address like team@example.com")
    return address


def _names(value: object, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(where, f"{key!r} must be a list of non-empty strings")
    if not value:
        raise _fail(where, f"{key!r} is empty, so nothing would match; leave it out to mean everything")
    return [v.strip().lower() for v in value]


def filter_fields(item: dict[str, Any], where: str) -> dict[str, Any]:
    """The filter and delivery keys of a recipient or channel entry, checked."""
    out: dict[str, Any] = {}
    if "regions" in item:
        out["regions"] = frozenset(_names(item["regions"], "regions", where))
    if "tags" in item:
        out["tags"] = tuple(_names(item["tags"], "tags", where))
    if "services" in item:
        out["services"] = tuple(_names(item["services"], "services", where))
    delivery = item.get("delivery", "digest")
    if delivery not in DELIVERIES:
        raise _fail(where, f"'delivery' must be one of {', '.join(DELIVERIES)}, not {delivery!r}")
    out["delivery"] = delivery
    minimum = item.get("min_addresses", 0)
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise _fail(where, "'min_addresses' must be a whole number, 0 or more")
    out["min_addresses"] = minimum
    family = item.get("family")
    if family is not None and family not in FAMILIES:
        raise _fail(where, f"'family' must be one of {', '.join(FAMILIES)}, not {family!r}")
    out["family"] = family
    return out


def _entry(item: object, index: int) -> Recipient:
    where = f"entry {index + 1}"
    if not isinstance(item, dict):
        raise _fail(where, f"expected an object with an 'address', got {type(item).__name__}")
    if "address" not in item:
        raise _fail(where, "missing 'address'")
    address = _address(item["address"], where)
    where = f"entry {index + 1} ({address})"
    unknown = sorted(set(item) - set(_KEYS))
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(_KEYS)})")
    name = item.get("name", "")
    if not isinstance(name, str) or "\n" in name or "\r" in name:
        raise _fail(where, "'name' must be a one-line string")
    return Recipient(address=address, name=name.strip(), **filter_fields(item, where))


def parse_recipients(text: str) -> list[Recipient]:
    """The recipients named by the setting's value; RecipientsError when it is empty or invalid."""
    text = text.strip()
    if not text:
        raise RecipientsError(f"{SETTING}: no recipients given")
    if text.startswith(("[", "{")):
        try:
            items = load_json(text)
        except JsonInputError as exc:  # also nesting, huge numbers, lone surrogates
            raise RecipientsError(f"{SETTING}: {exc}") from None
        if not isinstance(items, list):
            kind = type(items).__name__
            raise RecipientsError(f"{SETTING}: expected a JSON list of recipients, got {kind}")
        recipients = [_entry(item, i) for i, item in enumerate(items)]
    else:
        recipients = [Recipient(_address(part, f"entry {i + 1}")) for i, part in enumerate(text.split(","))]
    if not recipients:
        raise RecipientsError(f"{SETTING}: no recipients given")
    seen: set[str] = set()
    for r in recipients:
        # Sends are recorded per report and address: a duplicate would silently lose a filter.
        if r.address.lower() in seen:
            raise _fail(r.address, "listed twice; give each address one entry")
        seen.add(r.address.lower())
    return recipients


class Filter(Protocol):
    """What filter_report needs: a recipient or a channel."""

    @property
    def family(self) -> str | None: ...

    @property
    def min_addresses(self) -> int: ...

    def wants_region(self, region: str) -> bool: ...

    def wants_tag(self, tag: dict[str, Any]) -> bool: ...


def _family_only(tag: dict[str, Any], family: str) -> dict[str, Any] | None:
    version = 4 if family == "ipv4" else 6
    keys = ("added_prefixes", "removed_prefixes", "net_added", "net_removed")
    kept = {k: [p for p in tag[k] if (":" in p) == (version == 6)] for k in keys}
    if not kept["added_prefixes"] and not kept["removed_prefixes"]:
        return None  # no prefix of that family moved (metadata-only tags included)
    # The counts of the other family go; those of this family are the tag's own.
    other = "ipv6" if version == 4 else "ipv4"
    zeroed = {f"{other}_addresses_{d}": 0 for d in ("added", "removed") if f"{other}_addresses_{d}" in tag}
    return {**tag, **kept, **zeroed}


def tag_size(tag: dict[str, Any]) -> int:
    """A tag's change, in the units the messages show: IPv4 addresses plus IPv6 /64s."""
    v4_added, v4_removed, v6_added, v6_removed = tag_address_counts(tag)
    return v4_added + v4_removed + (v6_added + v6_removed) // SLASH64


def filter_report(report: dict[str, Any], recipient: Filter) -> dict[str, Any] | None:
    """The part of `report` this recipient asked for, or None when nothing in it matches.

    The result has the report's shape (it still validates and renders); only the tags and the
    summary differ. A report whose region is outside the recipient's regions is None even if
    its tags would match: regions and tag patterns must both match.
    """
    if not recipient.wants_region(report["region"]):
        return None
    kept = [t for t in report["tags"] if recipient.wants_tag(t)]
    family = getattr(recipient, "family", None)
    if family is not None:
        kept = [t for t in (_family_only(tag, family) for tag in kept) if t is not None]
    minimum = getattr(recipient, "min_addresses", 0)
    if minimum:
        kept = [t for t in kept if tag_size(t) >= minimum]
    if not kept:
        return None
    if family is None and len(kept) == len(report["tags"]):
        return report  # nothing filtered: keep the stored summary exactly as written
    return {**report, "summary": summarise(kept), "tags": kept}
