"""The worker's handler over the in-memory stores: real snapshot files, no Azurite, no sockets."""

from __future__ import annotations

import json
from typing import NamedTuple

from core.messages import RegionMessage
from runtime.adapters.memory import MemoryBlobStore
from tests.conftest import real_report, snapshot_path
from worker.handler import ParsedReplies, handle_region
from worker.sources import FileSource


class Stores(NamedTuple):
    snapshots: MemoryBlobStore
    reports: MemoryBlobStore
    replies: ParsedReplies


def _stores() -> Stores:
    return Stores(MemoryBlobStore("snapshots"), MemoryBlobStore("reports"), ParsedReplies())


def _check(region: str, cn: int, run_id: str, stores: Stores):
    return handle_region(
        RegionMessage("Public", region, run_id),
        source=FileSource(str(snapshot_path(cn))),
        snapshots=stores.snapshots,
        reports=stores.reports,
        replies=stores.replies,
    )


def test_a_redelivered_message_of_the_same_run_still_names_the_report_it_wrote():
    stores = _stores()
    reports = stores.reports
    assert _check("germanywestcentral", 340, "run-1", stores).status == "baseline"

    first = _check("germanywestcentral", 341, "run-2", stores)
    assert first.status == "changed"
    assert first.report is not None
    assert first.report.startswith("Public/germanywestcentral/340-341_")

    # The worker died after moving the state, before the message was deleted: the message comes
    # again. The region is unchanged now, but this run's outcome is still the report it wrote.
    again = _check("germanywestcentral", 341, "run-2", stores)
    assert (again.status, again.report) == ("changed", first.report)
    assert list(reports.names()) == [first.report]  # nothing written twice

    # The next run sees no change and names no report.
    later = _check("germanywestcentral", 341, "run-3", stores)
    assert (later.status, later.report) == ("unchanged", None)


def test_the_report_over_memory_is_what_diff_says():
    stores = _stores()
    reports = stores.reports
    _check("francecentral", 360, "a", stores)
    outcome = _check("francecentral", 361, "b", stores)
    assert outcome.report is not None
    blob = reports.read(outcome.report)
    assert blob is not None
    stored = json.loads(blob.data)
    expected = real_report(360, 361, "francecentral")
    assert stored["tags"] == expected["tags"]
    assert stored["summary"] == expected["summary"]
