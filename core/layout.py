"""Blob names and the region state document. Pure.

snapshots/<cloud>/<region>/latest.json             region state: current content and bookkeeping
snapshots/<cloud>/<region>/snapshots/<sha256>.json immutable, named by content
snapshots/<cloud>/regions.json                     the cloud: regions watched, first seen, retired
snapshots/<cloud>/regressions/<reply sha256>.json  one per distinct reply older than what was recorded
reports/<cloud>/<region>/<from cn>-<to cn>_<from sha>_<to sha>.json   immutable change report

Content-derived names make every write repeatable: a rerun writes the same name and the
create-only write is skipped.
"""

from __future__ import annotations

import json
from typing import Any

from core.ports import BlobStore

STATE_SCHEMA = "servicetags.region-state/v1"
REGIONS_SCHEMA = "servicetags.regions/v1"


def state_name(cloud: str, region: str) -> str:
    return f"{cloud}/{region}/latest.json"


def snapshot_name(cloud: str, region: str, sha256: str) -> str:
    return f"{cloud}/{region}/snapshots/{sha256}.json"


def regions_name(cloud: str) -> str:
    return f"{cloud}/regions.json"


def regression_name(cloud: str, reply_sha256: str) -> str:
    return f"{cloud}/regressions/{reply_sha256}.json"


def report_name(report: dict[str, Any]) -> str:
    old, new = report["from"], report["to"]
    return (
        f"{report['cloud']}/{report['region']}/{old['changeNumber']}-{new['changeNumber']}_"
        f"{old['sha256'][:16]}_{new['sha256'][:16]}.json"
    )


def to_json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False).encode()


def newer_or_equal(change_number: str, than: str) -> bool:
    """False only when both are numbers and the first is smaller (a lagging location)."""
    if change_number.isdigit() and than.isdigit():
        return int(change_number) >= int(than)
    return True


def known_regions(snapshots: BlobStore, cloud: str) -> list[str]:
    """Region names the workers recorded from the data; empty before the first run."""
    blob = snapshots.read(regions_name(cloud))
    return list(json.loads(blob.data)["regions"]) if blob else []


def poison_name(queue: str) -> str:
    """Where a queue's consumer moves the messages it gives up on."""
    return f"{queue}-poison"
