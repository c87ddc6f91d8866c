"""The region message: what the producer enqueues and a worker takes. Pure."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, NamedTuple

from core.errors import BadMessage
from core.json_input import JsonInputError, load_json
from runtime.config import CLOUDS

SCHEMA = "servicetags.region-check/v1"
MAX_BYTES = 4096  # a region message is ~150 bytes; anything larger is not ours
_REGION = re.compile(r"^[a-z0-9]{2,40}$")


class RegionMessage(NamedTuple):
    cloud: str
    region: str  # ARM location name, or "global"
    run_id: str
    enqueued_at: str = ""
    # Set by the producer on `global` in an `all` run: also enqueue regions not seen before.
    discover: bool = False

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "cloud": self.cloud,
            "region": self.region,
            "run_id": self.run_id,
            "enqueued_at": self.enqueued_at,
        }
        if self.discover:
            doc["discover"] = True
        return json.dumps(doc, separators=(",", ":"))


def decode_json_message(content: str | bytes) -> Any:
    """A queue message's JSON: plain text or base64 of it (Functions and Event Grid write
    base64, our producer and portal users plain text)."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            raise BadMessage("message is not UTF-8 text") from None
    if len(content) > MAX_BYTES * 2:
        raise BadMessage(f"message is {len(content)} characters, over the {MAX_BYTES * 2} allowed")
    text = content.strip()
    if not text:
        raise BadMessage("message is empty")
    if text[0] not in "{[":
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise BadMessage("message is neither JSON nor base64-encoded JSON") from None
    try:
        return load_json(text)
    except JsonInputError as exc:
        # Malformed, deeply nested, a lone surrogate: permanent, so poisoned at once.
        raise BadMessage(f"message {exc}") from None


def parse_region_message(content: str | bytes) -> RegionMessage:
    if len(content) > MAX_BYTES:
        raise BadMessage(f"message is {len(content)} bytes, over the {MAX_BYTES} a region message may have")
    doc = decode_json_message(content)
    if not isinstance(doc, dict):
        raise BadMessage(f"message must be a JSON object, not {type(doc).__name__}")
    missing = [k for k in ("cloud", "region", "run_id") if not isinstance(doc.get(k), str) or not doc[k]]
    if missing:
        raise BadMessage(f"message lacks {', '.join(missing)} (needs cloud, region and run_id strings)")
    schema = doc.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise BadMessage(f"message schema {schema!r} is not {SCHEMA!r}")
    if doc["cloud"] not in CLOUDS:
        raise BadMessage(f"unknown cloud {doc['cloud']!r} (expected one of {', '.join(CLOUDS)})")
    region = doc["region"].lower()
    if not _REGION.match(region):
        raise BadMessage(f"region {doc['region']!r} is not a location name")
    if region == "all":
        # `servicetags diff --region all` means the whole cloud; a worker checks one region.
        raise BadMessage(
            f"region {doc['region']!r} is not a location: a message names one ARM "
            "location (such as francecentral) or global"
        )
    discover = doc.get("discover", False)
    if not isinstance(discover, bool):
        raise BadMessage("message field discover must be true or false")
    return RegionMessage(doc["cloud"], region, doc["run_id"], str(doc.get("enqueued_at", "")), discover)
