"""The normalised service-tag model: plain, immutable data shared by every component."""

from __future__ import annotations

from typing import Any, NamedTuple

# Fields only the weekly download file carries (a numeric alias of `region`, and a constant
# platform name). They are dropped at load, so a file and an API reply with the same data
# have the same content.
FILE_ONLY_FIELDS = frozenset({"regionId", "platform"})
# Fields only the API carries; compared only when both sides have them.
API_ONLY_FIELDS = frozenset({"state", "serviceTagChangeNumber"})


# NamedTuples rather than dataclasses: immutable and compared by value all the same, but
# `servicetags diff` must start fast and builds 6,000 of these; dataclasses cost ~15 ms there.
class ServiceTag(NamedTuple):
    id: str
    name: str
    region: str  # the data's region code ("" for global tags), e.g. "centralfrance"
    system_service: str
    change_number: str
    prefixes: frozenset[str]  # normalised; IPv4 and IPv6 told apart by `ipv4`/`ipv6`
    # Other fields, kept for metadata comparison: `properties` members beyond the known ones
    # (networkFeatures, state, ...) and members of the tag object itself (serviceTagChangeNumber).
    properties_extra: dict[str, Any] = {}  # noqa: RUF012 - never mutated
    extra: dict[str, Any] = {}  # noqa: RUF012 - never mutated

    @property
    def ipv4(self) -> frozenset[str]:
        return frozenset(p for p in self.prefixes if ":" not in p)

    @property
    def ipv6(self) -> frozenset[str]:
        return frozenset(p for p in self.prefixes if ":" in p)


class Snapshot(NamedTuple):
    cloud: str
    change_number: str
    tags: dict[str, ServiceTag]  # by tag id, in the source's order
    source: str = ""  # where it came from, for messages

    def select(self, region_code: str | None) -> Snapshot:
        """Only the tags of one data region code ("" = global); None keeps everything."""
        if region_code is None:
            return self
        tags = {k: t for k, t in self.tags.items() if t.region == region_code}
        return Snapshot(self.cloud, self.change_number, tags, self.source)
