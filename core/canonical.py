"""The canonical form of a snapshot (the API's wire shape, deterministic) and the content
hashes that identify it: a digest per tag, and the snapshot's `content_sha256`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from core.model import ServiceTag, Snapshot


def tag_document(tag: ServiceTag) -> dict[str, Any]:
    """A tag in the API's wire shape, prefixes in string order (cheap and deterministic)."""
    return {
        "name": tag.name,
        "id": tag.id,
        **tag.extra,
        "properties": {
            "changeNumber": tag.change_number,
            "region": tag.region,
            "systemService": tag.system_service,
            "addressPrefixes": sorted(tag.prefixes),
            **tag.properties_extra,
        },
    }


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# One encoder for every header: `json.dumps(..., sort_keys=True)` builds a new one per call.
_encode_header = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


def tag_digests(snapshot: Snapshot, skip: Snapshot | None = None) -> dict[str, bytes]:
    """A digest per tag, except for tags equal to the same tag of `skip` (most tags do not
    change from one week to the next, and their digests are known)."""
    earlier = skip.tags if skip is not None else {}
    out: dict[str, bytes] = {}
    for tag_id, tag in snapshot.tags.items():
        if earlier.get(tag_id) == tag:
            continue
        header = [
            tag.id,
            tag.name,
            tag.region,
            tag.system_service,
            tag.change_number,
            tag.properties_extra,
            tag.extra,
        ]
        digest = hashlib.sha256(_encode_header(header).encode())
        digest.update(b"\n")
        digest.update("\n".join(sorted(tag.prefixes)).encode())
        out[tag_id] = digest.digest()
    return out


def content_sha256(snapshot: Snapshot, digests: Mapping[str, bytes] | None = None) -> str:
    """Identifies the content: the tags only, so a new top-level changeNumber over the same
    tags (which Microsoft publishes) hashes the same.

    The hash of the tag digests in id order; a tag digest covers a one-line JSON header of
    every field but the prefixes, then the sorted prefixes one per line (unambiguous: prefixes
    hold no newline), which is cheaper than JSON-encoding 90,000 prefix strings. `digests`
    may hold more tags than the snapshot (those of a whole file, for one region of it).
    """
    digests = digests if digests is not None else tag_digests(snapshot)
    return hashlib.sha256(b"".join(digests[k] for k in sorted(snapshot.tags))).hexdigest()


def canonical_document(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "changeNumber": snapshot.change_number,
        "cloud": snapshot.cloud,
        "values": [tag_document(snapshot.tags[k]) for k in sorted(snapshot.tags)],
    }


def canonical_bytes(snapshot: Snapshot) -> bytes:
    """The snapshot in ARM shape, deterministic, ready to store and to load again."""
    return _canonical_json(canonical_document(snapshot))
