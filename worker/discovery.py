"""Keeping the list of regions the data holds, and fanning out to regions seen for the first time.

The producer enqueues every known region from this list, so no run downloads the data twice.
On the very first run the list is empty: the producer enqueues `global`, and its worker, which
sees the whole cloud anyway, enqueues every region it finds. A region that appears later in
Microsoft's data is picked up the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from common import layout
from common.logs import log_event
from common.messages import RegionMessage
from common.ports import BlobStore

log = logging.getLogger(__name__)


def discover(message: RegionMessage, regions: Sequence[str], *, snapshots: BlobStore,
             enqueue: Callable[[str], None]) -> list[str]:
    """Enqueue the regions not seen before, then record the list. Enqueue first: a crash in
    between repeats the fan-out (harmless duplicates), never loses it."""
    name = layout.regions_name(message.cloud)
    for _ in range(5):
        blob = snapshots.read(name)
        known = set(json.loads(blob.data)["regions"]) if blob else set()
        new = sorted(set(regions) - known)
        if not new and blob is not None:
            return []
        for region in new:
            enqueue(RegionMessage(message.cloud, region, message.run_id,
                                  datetime.now(UTC).isoformat(timespec="seconds")).to_json())
        doc = {"schema": layout.REGIONS_SCHEMA, "cloud": message.cloud,
               "regions": sorted(known | set(regions)),
               "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if snapshots.replace(name, layout.to_json_bytes(doc), etag=blob.etag if blob else None):
            if new:
                log_event(log, "regions_discovered", f"{len(new)} new regions enqueued",
                          cloud=message.cloud, run_id=message.run_id, regions=new)
            return new
    return []
