"""The ARM wire shape of service tags: a download file or ARM reply turned into what the
Service Tag Discovery API returns (string change numbers, `id`, `type`, no file-only fields)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Download-file fields the ARM API does not return.
_DOWNLOAD_ONLY_PROPERTIES = frozenset({"regionId", "platform"})


# --------------------------------------------------------------------------------------
# ARM shape conversion (pure)


def read_document(path: Path) -> dict[str, Any]:
    """Load a service-tag JSON file, gzipped or plain (detected by content, not name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    # Microsoft's download files have been published with a UTF-8 byte-order mark.
    document = json.loads(raw.decode("utf-8-sig"))
    if not isinstance(document, dict) or not isinstance(document.get("values"), list):
        raise ValueError(f"{path} is not a service-tag document (no `values` list)")
    return document


def arm_tag(value: dict[str, Any]) -> dict[str, Any]:
    """One tag in ARM's shape: string changeNumber, no regionId/platform, rest kept as is."""
    tag = {key: item for key, item in value.items() if key != "properties"}
    properties: dict[str, Any] = {}
    for key, item in value.get("properties", {}).items():
        if key in _DOWNLOAD_ONLY_PROPERTIES:
            continue
        properties[key] = str(item) if key == "changeNumber" else item
    tag["properties"] = properties
    if "serviceTagChangeNumber" in tag:
        tag["serviceTagChangeNumber"] = str(tag["serviceTagChangeNumber"])
    return tag


def arm_document(document: dict[str, Any], subscription_id: str) -> dict[str, Any]:
    """The whole ARM answer for `document` (either input shape) as seen by a subscription."""
    cloud = str(document.get("cloud", "Public"))
    return {
        **_arm_header(cloud, str(document["changeNumber"]), subscription_id),
        "values": [arm_tag(value) for value in document["values"]],
    }


def _arm_header(cloud: str, change_number: str, subscription_id: str) -> dict[str, Any]:
    # ARM names the list after the cloud ("Public") and puts it under the subscription.
    return {
        "name": cloud,
        "id": f"/subscriptions/{subscription_id}/providers/Microsoft.Network/serviceTags/{cloud}",
        "type": "Microsoft.Network/serviceTags",
        "changeNumber": change_number,
        "cloud": cloud,
    }


@dataclass(frozen=True)
class Snapshot:
    """A snapshot ready to serve: the `values` array is serialised once, at load."""

    path: Path
    cloud: str
    change_number: str
    tag_count: int
    values_json: bytes

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        document = read_document(path)
        values = [arm_tag(value) for value in document["values"]]
        return cls(
            path=path,
            cloud=str(document.get("cloud", "Public")),
            change_number=str(document["changeNumber"]),
            tag_count=len(values),
            values_json=json.dumps(values, separators=(",", ":")).encode(),
        )

    def body_parts(self, subscription_id: str) -> list[bytes]:
        """The answer body in pieces, so serving never copies the large `values` part."""
        header = _arm_header(self.cloud, self.change_number, subscription_id)
        head = json.dumps(header, separators=(",", ":"))[:-1] + ',"values":'
        return [head.encode(), self.values_json, b"}"]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "changeNumber": self.change_number, "tags": self.tag_count}
