"""Parsing service-tag snapshots (download file or ARM reply, plain or gzipped bytes already
read) into the model. Reading files is `runtime.snapshot_files`; the canonical form and the
content hashes are `core.canonical`."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple, NoReturn

from core.errors import InvalidPrefixError, SnapshotError
from core.json_input import JsonInputError, load_json
from core.model import FILE_ONLY_FIELDS, ServiceTag, Snapshot
from core.prefixes import PrefixParser, normalise

GZIP_MAGIC = b"\x1f\x8b"
_KNOWN_PROPERTIES = frozenset({"changeNumber", "region", "systemService", "addressPrefixes"})
_KNOWN_TAG_FIELDS = frozenset({"name", "id", "properties"})


# Real files are about 4 MB (decompressed: the ARM reply of a whole cloud, 3.5 MB); the bound
# stops /dev/zero or a gzip bomb (4 GiB of spaces in 4 MB) before it exhausts memory.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_BYTES_VARIABLE = "SERVICETAGS_MAX_SNAPSHOT_BYTES"


def too_large(source: str, limit: int) -> SnapshotError:
    return SnapshotError(
        source, f"is over the {limit:,}-byte limit for a snapshot (set {MAX_BYTES_VARIABLE} to allow more)"
    )


def decompress(
    data: bytes, source: str, *, gz_expected: bool = False, limit: int = DEFAULT_MAX_BYTES
) -> bytes:
    """`data` un-gzipped if it is gzip (every member), refusing more than `limit` bytes out.
    (Data not gzipped is returned as it is: whoever read it bounded it.)"""
    if data[:2] != GZIP_MAGIC:
        if gz_expected and data.strip():
            raise SnapshotError(source, "named .gz but is not gzip data")
        return data
    out = bytearray()
    rest = data
    try:
        while rest[:2] == GZIP_MAGIC:
            inflater = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
            out += inflater.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise too_large(source, limit)
            if not inflater.eof:
                raise SnapshotError(source, "corrupt or truncated gzip data (it ends before its last block)")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise SnapshotError(source, f"corrupt or truncated gzip data ({exc})") from None
    if rest.strip(b"\0"):  # gzip allows zero padding after the last member, nothing else
        raise SnapshotError(source, "corrupt gzip data (trailing garbage after the last member)")
    return bytes(out)


def parse_snapshot(data: bytes | str, source: str, parser: PrefixParser | None = None) -> Snapshot:
    """Parse a download file or an ARM serviceTags reply into the normalised model."""
    if isinstance(data, bytes):
        data = decompress(data, source)
    if not data.strip():
        raise SnapshotError(source, "is empty")
    return snapshot_from_document(parse_json(data, source), source, parser or PrefixParser())


def parse_json(data: bytes | str, source: str) -> Any:
    """The JSON document of a snapshot (un-gzipped if needed); errors name the source."""
    if isinstance(data, bytes):
        data = decompress(data, source)
    if not data.strip():
        raise SnapshotError(source, "is empty")
    try:
        return load_json(data)
    except JsonInputError as exc:
        raise SnapshotError(source, str(exc)) from None


class Baseline(NamedTuple):
    """An earlier snapshot and the document it was built from.

    A later document's tag whose JSON is the same as before becomes the earlier tag object
    itself: nothing to build, check or hash again, no second copy in memory, and comparisons
    with the earlier snapshot stop at identity. A week changes a few percent of the tags."""

    snapshot: Snapshot
    raw: dict[str, tuple[Any, ServiceTag]]  # tag id -> (its JSON value, its model)


def baseline_of(doc: Any, snapshot: Snapshot) -> Baseline:
    """`snapshot` must have been built from all of `doc` (its tags are in document order)."""
    tags = snapshot.tags.values()
    assert len(tags) == len(doc["values"]), "a baseline is a whole document"
    return Baseline(snapshot, {tag.id: (value, tag) for value, tag in zip(doc["values"], tags, strict=True)})


def _change_number(value: Any, source: str, where: str) -> str:
    # The download file uses integers, the API strings; the model uses strings.
    kind = type(value)
    if kind is str and value:
        return str(value)
    if kind is int:
        return str(value)
    raise SnapshotError(source, f"{where}changeNumber must be an integer or a string")


def snapshot_from_document(
    doc: Any,
    source: str,
    parser: PrefixParser,
    region_code: str | None = None,
    baseline: Baseline | None = None,
) -> Snapshot:
    """The model of a parsed document, every prefix checked: `build_snapshot`, then
    `checked`. With `region_code`, of that region's tags only (the others are not built,
    and their prefixes not checked)."""
    return checked(build_snapshot(doc, source, region_code, baseline), doc, parser, baseline)


def build_snapshot(
    doc: Any, source: str, region_code: str | None = None, baseline: Baseline | None = None
) -> Snapshot:
    """The model of a parsed document, its shape checked but not its prefixes (`checked`
    does that, separately, so the two can run side by side).

    With `baseline`, a tag equal to the baseline's is the baseline's object: nothing to
    build, check or hash again."""
    if not isinstance(doc, dict):
        raise SnapshotError(source, f"expected a JSON object, found {type(doc).__name__}")
    values = doc.get("values")
    if values is None:
        raise SnapshotError(source, "has no 'values' list (not a service-tags file or reply)")
    if not isinstance(values, list):
        raise SnapshotError(source, "'values' must be a list")
    cloud = doc.get("cloud", "Public")
    if not isinstance(cloud, str):
        raise SnapshotError(source, "'cloud' must be a string")
    change_number = _change_number(doc.get("changeNumber"), source, "top-level ")
    tags: dict[str, ServiceTag] = {}
    raw = baseline.raw if baseline is not None else {}
    known = baseline.snapshot.tags if baseline is not None else {}
    for index, value in enumerate(values):
        if region_code is not None and _region_of(value) != region_code:
            continue
        key = value.get("id") if raw and type(value) is dict else None
        prior = raw.get(key) if type(key) is str else None
        # Deep equality of the JSON, in C: cheaper than building the tag to compare it.
        tag = prior[1] if prior is not None and prior[0] == value else _tag(value, index, source)
        if tag.id in tags:
            raise SnapshotError(source, f"values[{index}]: duplicate tag id {tag.id!r}")
        same = known.get(tag.id)
        if same is not None and same is not tag and same == tag:
            tag = same  # also when only the order of its lists changed
        tags[tag.id] = tag
    return Snapshot(cloud, change_number, tags, source)


def checked(snapshot: Snapshot, doc: Any, parser: PrefixParser, baseline: Baseline | None = None) -> Snapshot:
    """`snapshot` (built from `doc`) once every prefix is valid, in normalised form.

    Only the prefixes the baseline's same tag does not hold are checked (its own were).
    Raises SnapshotError naming the first invalid prefix and where it is. Returns the
    snapshot itself when every prefix is already normalised (as Microsoft publishes them),
    else a normalised copy. Writes to nothing it is given."""
    known = baseline.snapshot.tags if baseline is not None else {}
    unchecked: list[frozenset[str]] = []
    for tag in snapshot.tags.values():
        same = known.get(tag.id)
        if same is tag:
            continue
        unchecked.append(tag.prefixes if same is None else tag.prefixes - same.prefixes)
    try:
        parser.check_all(set().union(*unchecked))
    except InvalidPrefixError:
        ids = snapshot.tags.keys()
        _raise_first_invalid(
            [
                (i, v)
                for i, v in enumerate(doc["values"])
                if type(v) is dict and v.get("id", v.get("name")) in ids
            ],
            snapshot.source,
        )
    if not parser.renamed:
        return snapshot
    tags = dict(snapshot.tags)
    return snapshot._replace(tags=tags) if _normalise(tags, parser.renamed) else snapshot


def _region_of(value: Any) -> object:
    props = value.get("properties") if type(value) is dict else None
    return props.get("region", "") if type(props) is dict else None


def _normalise(tags: dict[str, ServiceTag], renamed: Mapping[str, str]) -> bool:
    """Replace, in place, the tags holding prefixes not in normalised form. True if any."""
    raw = renamed.keys()
    replaced = False
    for tag_id, tag in tags.items():
        if not tag.prefixes.isdisjoint(raw):
            tags[tag_id] = tag._replace(prefixes=frozenset(renamed.get(p, p) for p in tag.prefixes))
            replaced = True
    return replaced


def _raise_first_invalid(values: list[tuple[int, Any]], source: str) -> NoReturn:
    # Only on error: walk the document again to say exactly where the bad prefix is.
    for index, value in values:
        for position, text in enumerate(value["properties"]["addressPrefixes"]):
            try:
                normalise(text)
            except InvalidPrefixError as exc:
                where = f"values[{index}] ({value.get('id', value.get('name'))})"
                raise SnapshotError(
                    source, f"{where}: properties.addressPrefixes[{position}] {exc}"
                ) from None
    raise AssertionError("check_all failed but no prefix is invalid")  # pragma: no cover


_SKIPPED_PROPERTIES = _KNOWN_PROPERTIES | FILE_ONLY_FIELDS


def _tag(value: Any, index: int, source: str) -> ServiceTag:
    # Called 3,000 times per snapshot: messages are built only when something is wrong.
    props: Any = value.get("properties") if type(value) is dict else None
    tag_id = value.get("id", value.get("name")) if type(value) is dict else None
    prefixes = props.get("addressPrefixes") if type(props) is dict else None
    if type(tag_id) is not str or not tag_id or type(prefixes) is not list:
        _raise_tag_error(value, index, source)
    region = props.get("region", "")
    system_service = props.get("systemService", "")
    if type(region) is not str or type(system_service) is not str:
        raise SnapshotError(
            source, f"values[{index}] ({tag_id}): properties.region and systemService must be strings"
        )
    try:
        prefix_set = frozenset(prefixes)
    except TypeError:
        raise SnapshotError(
            source, f"values[{index}] ({tag_id}): properties.addressPrefixes must hold strings only"
        ) from None
    change_number = props.get("changeNumber", "0")
    if type(change_number) is not str or not change_number:
        change_number = _change_number(change_number, source, f"values[{index}] ({tag_id}): properties.")
    name = value.get("name", tag_id)
    if type(name) is not str:
        raise SnapshotError(source, f"values[{index}] ({tag_id}): 'name' must be a string")
    # Positional tuple construction: keyword NamedTuple construction is 3x slower, 6,000 times.
    return _new_tag(
        ServiceTag,
        (
            tag_id,
            name,
            region,
            system_service,
            change_number,
            prefix_set,
            _properties_extra(props),
            {k: v for k, v in value.items() if k not in _KNOWN_TAG_FIELDS} if len(value) > 3 else {},
        ),
    )


_new_tag = tuple.__new__


def _properties_extra(props: dict[str, Any]) -> dict[str, Any]:
    extra = {k: v for k, v in props.items() if k not in _SKIPPED_PROPERTIES}
    features = extra.get("networkFeatures")
    # A set in meaning, published in varying order: sorted, a reordering is no change.
    if type(features) is list:
        try:  # noqa: SIM105 - contextlib.suppress would cost a context manager per tag
            extra["networkFeatures"] = sorted(features)
        except TypeError:  # values of mixed or unorderable types: kept as published
            pass
    return extra


def _raise_tag_error(value: Any, index: int, source: str) -> NoReturn:
    if not isinstance(value, dict):
        raise SnapshotError(source, f"values[{index}] is not an object")
    tag_id = value.get("id", value.get("name"))
    if not isinstance(tag_id, str) or not tag_id:
        raise SnapshotError(source, f"values[{index}] has no 'id' or 'name'")
    where = f"values[{index}] ({tag_id})"
    if not isinstance(value.get("properties"), dict):
        raise SnapshotError(source, f"{where} has no 'properties' object")
    raise SnapshotError(source, f"{where}: properties.addressPrefixes must be a list")
