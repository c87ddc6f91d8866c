"""Mapping ARM location names (what users type) to the region codes in the data.

`properties.region` is the ARM location name for most regions but not all: `germanywc` is
`germanywestcentral`, `centralfrance` is `francecentral`. Regional tags are named
`<Service>.<armname>` (AzureCloud.germanywestcentral), so the mapping is read off the data:
a code's ARM name is the most common tag-name suffix among its tags. No table to maintain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from core.errors import UnknownRegionError
from core.model import ServiceTag

ALL = "all"
GLOBAL = "global"


class RegionIndex(NamedTuple):
    code_by_name: Mapping[str, str]  # ARM name -> data code
    name_by_code: Mapping[str, str]  # data code -> ARM name

    @property
    def names(self) -> list[str]:
        """Every ARM location name in the data, sorted."""
        return sorted(self.code_by_name)

    def code_for(self, region: str) -> str | None:
        """The data code to select for a region name; None selects everything ("all").

        Accepts ARM names, the data's own codes, `global` and `all`, in any case.
        """
        if selects_all(region):
            return None
        key = region.strip().lower()
        if key == GLOBAL:
            return ""
        if key in self.code_by_name:
            return self.code_by_name[key]
        if key in self.name_by_code:
            return key
        import difflib  # only for this message; keeps start-up fast

        known = [*self.names, GLOBAL, ALL]
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(self.names)} regions known)"
        raise UnknownRegionError(f"unknown region {region!r}{hint}")

    def location_code(self, region: str) -> str | None:
        """For a region message: the data code of an ARM location name (`""` for `global`), or
        None when this data does not list it (a region that vanished, or never existed).

        Stricter than `code_for`: a message must name an ARM location, so `all` and the data's
        own codes (`germanywc`) are refused rather than read as another region's state.
        """
        key = region.strip().lower()
        if key == GLOBAL:
            return ""
        if key in self.code_by_name:
            return self.code_by_name[key]
        if selects_all(key):
            raise UnknownRegionError(
                f"region {region!r} is not a location: a message names one ARM location, or global"
            )
        if key in self.name_by_code:
            raise UnknownRegionError(
                f"region {region!r} is the data's code for "
                f"{self.name_by_code[key]}; a message names the ARM location "
                f"{self.name_by_code[key]!r}"
            )
        return None

    def unknown(self, region: str) -> UnknownRegionError:
        """The error for a name this data does not know, with close matches as a hint."""
        import difflib  # only for this message; keeps start-up fast

        known = [*self.names, GLOBAL]
        close = difflib.get_close_matches(region, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(self.names)} regions known)"
        return UnknownRegionError(f"unknown region {region!r}{hint}")

    def name_for(self, code: str) -> str:
        return GLOBAL if code == "" else self.name_by_code.get(code, code)


def selects_all(region: str) -> bool:
    """Whether a region name asks for every tag (`all`, in any case): no index needed."""
    return region.strip().lower() == ALL


def region_index(tags: Iterable[ServiceTag]) -> RegionIndex:
    return index_from_names((t.name, t.region) for t in tags)


def index_from_document(doc: Any) -> RegionIndex:
    """The index read straight off a reply's raw `values`, without building the model (a
    worker needs only its own region's tags). Malformed entries are skipped here; the model
    built for a region reports them."""
    pairs = []
    for value in doc.get("values") or () if isinstance(doc, dict) else ():
        props = value.get("properties") if isinstance(value, dict) else None
        if isinstance(props, dict) and isinstance(props.get("region"), str):
            pairs.append((str(value.get("name", value.get("id", ""))), props["region"]))
    return index_from_names(pairs)


def index_from_names(pairs: Iterable[tuple[str, str]]) -> RegionIndex:
    """From (tag name, region code) pairs."""
    suffixes: dict[str, Counter[str]] = {}
    for name, region in pairs:
        if not region or not isinstance(region, str):
            continue
        counter = suffixes.setdefault(region, Counter())
        # A name that is not a string (malformed input) has no suffix to learn from.
        _, dot, suffix = name.rpartition(".") if isinstance(name, str) else ("", "", "")
        if dot and suffix:
            counter[suffix.lower()] += 1
    name_by_code: dict[str, str] = {}
    for code, counter in suffixes.items():
        # Ties go to the code itself, then alphabetical order, so the result is stable.
        best = max(counter.items(), key=lambda kv: (kv[1], kv[0] == code, kv[0]), default=None)
        name_by_code[code] = best[0] if best else code
    code_by_name = {name: code for code, name in name_by_code.items()}
    return RegionIndex(code_by_name, name_by_code)
