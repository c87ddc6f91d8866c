"""Discovery over the in-memory store and queue, on real files: the first `global` check fans
out to every region once; a region that appears later is enqueued alone; a lost race on the
cloud document is retried, not lost."""

from __future__ import annotations

import json

from core.change_report import index_of
from core.layout import regions_name, to_json_bytes
from core.messages import RegionMessage
from runtime.adapters.memory import MemoryBlobStore, MemoryQueue
from tests.conftest import real_snapshot
from worker.discovery import discover

GLOBAL = RegionMessage("Public", "global", "run-1", discover=True)


def names(cn: int) -> list[str]:
    return list(index_of(real_snapshot(cn)).names)


def drain(queue: MemoryQueue) -> list[str]:
    out = []
    while (message := queue.receive(visibility_timeout=60)) is not None:
        out.append(json.loads(message.content)["region"])
        queue.delete(message)
    return out


def cloud(store: MemoryBlobStore) -> dict:
    blob = store.read(regions_name("Public"))
    assert blob is not None
    return json.loads(blob.data)


def test_the_first_check_fans_out_once_and_a_region_launched_later_is_enqueued_alone():
    snapshots, queue = MemoryBlobStore("snapshots"), MemoryQueue("regions")
    first = discover(GLOBAL, names(346), snapshots=snapshots, enqueue=queue.send, change_number="346")
    assert len(first) == 62 and sorted(drain(queue)) == sorted(names(346))
    doc = cloud(snapshots)
    assert doc["regions"] == sorted(names(346)) and doc["change_number"] == "346"
    assert all(seen["baseline"] for seen in doc["first_seen"].values())

    # The same message again (the worker died before deleting it): nothing more to do.
    assert discover(GLOBAL, names(346), snapshots=snapshots, enqueue=queue.send, change_number="346") == []
    assert drain(queue) == []

    later = RegionMessage("Public", "global", "run-2", discover=True)
    assert discover(later, names(347), snapshots=snapshots, enqueue=queue.send, change_number="347") == [
        "indonesiacentral"
    ]
    assert drain(queue) == ["indonesiacentral"]
    seen = cloud(snapshots)["first_seen"]["indonesiacentral"]
    assert (seen["baseline"], seen["absent_in"], seen["change_number"]) == (False, "346", "347")


class RacedStore(MemoryBlobStore):
    """Another worker writes the cloud document just before this one's first write."""

    def __init__(self, competitor: dict) -> None:
        super().__init__("snapshots")
        self.competitor: dict | None = competitor

    def replace(self, name: str, data: bytes, *, etag: str | None, content_type: str = "application/json"):
        if self.competitor is not None:
            doc, self.competitor = self.competitor, None
            assert super().replace(name, to_json_bytes(doc), etag=etag) is not None
        return super().replace(name, data, etag=etag, content_type=content_type)


def test_a_lost_race_on_the_cloud_document_is_read_again_and_nothing_is_dropped():
    competitor = {"schema": "servicetags.regions/v1", "regions": ["atlantis"], "change_number": "346"}
    snapshots, queue = RacedStore(competitor), MemoryQueue("regions")
    new = discover(GLOBAL, names(346), snapshots=snapshots, enqueue=queue.send, change_number="346")
    assert new == sorted(names(346))
    doc = cloud(snapshots)
    assert doc["regions"] == sorted(["atlantis", *names(346)])  # the competitor's region kept
    # The first attempt's fan-out went out before its write failed: duplicates, never a loss.
    assert sorted(set(drain(queue))) == sorted(names(346))
