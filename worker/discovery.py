"""Keeping the cloud document, and fanning out to regions seen for the first time.

The producer enqueues every region the document lists as watched, so no run downloads the
data twice. On the very first run there is no document: the producer enqueues `global`, and
its worker, which sees the whole cloud anyway, enqueues every region it finds and records
them as the cloud's baseline. A region that appears later in Microsoft's data (or comes back
after retirement) is picked up the same way, and recorded as new: its first check reports it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from core import layout
from core.lifecycle import after_discovery
from core.messages import RegionMessage
from core.ports import BlobStore
from runtime.logs import log_event

log = logging.getLogger(__name__)


def discover(
    message: RegionMessage,
    regions: Sequence[str],
    *,
    snapshots: BlobStore,
    enqueue: Callable[[str], None],
    change_number: str = "",
    fan_out: bool = True,
) -> list[str]:
    """Record the regions of a reply in the cloud document and, with `fan_out`, enqueue the
    ones not watched before. Enqueue first: a crash in between repeats the fan-out (harmless
    duplicates), never loses it."""
    name = layout.regions_name(message.cloud)
    for _ in range(5):
        blob = snapshots.read(name)
        known = json.loads(blob.data) if blob else None
        now = datetime.now(UTC).isoformat(timespec="seconds")
        doc, new = after_discovery(known, list(regions), change_number, now)
        if doc is known or (
            not new
            and known is not None
            and known.get("change_number") == change_number
            and known.get("first_seen") is not None
        ):
            return []
        if fan_out:
            for region in new:
                enqueue(RegionMessage(message.cloud, region, message.run_id, now).to_json())
        if snapshots.replace(name, layout.to_json_bytes(doc), etag=blob.etag if blob else None):
            if new:
                log_event(
                    log,
                    "regions_discovered",
                    f"{len(new)} new regions {'enqueued' if fan_out else 'recorded'}",
                    cloud=message.cloud,
                    run_id=message.run_id,
                    regions=new,
                    change_number=change_number,
                    baseline=known is None,
                )
            return new
    return []
