"""The BlobStore and Queue contract, asserted the same way over Azurite and the in-memory
adapters: what the pipeline relies on, so the fake cannot drift from the real service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from core.ports import BlobStore, LostReceipt, Queue
from runtime.adapters.memory import MemoryBlobStore, MemoryQueue
from runtime.adapters.storage import AzureBlobStore, AzureQueue


@pytest.fixture(params=["memory", "azurite"])
def store(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    if request.param == "memory":
        yield MemoryBlobStore("contract")
        return
    storage = request.getfixturevalue("storage")
    yield AzureBlobStore(storage.container("contract"))


@pytest.fixture(params=["memory", "azurite"])
def queue(request: pytest.FixtureRequest) -> Iterator[Queue]:
    if request.param == "memory":
        yield MemoryQueue("contract")
        return
    storage = request.getfixturevalue("storage")
    yield AzureQueue(storage.queue("contract"))


STALE = LostReceipt  # both adapters raise the port's own error, never an SDK one


def test_create_is_create_only(store: BlobStore):
    assert store.create("reports/a.json", b"first") is True
    assert store.create("reports/a.json", b"second") is False
    blob = store.read("reports/a.json")
    assert blob is not None
    assert blob.data == b"first"


def test_read_of_a_missing_blob_is_none(store: BlobStore):
    assert store.read("nothing/here.json") is None


def test_replace_holds_to_the_etag(store: BlobStore):
    first = store.replace("state/latest.json", b"v1", etag=None)
    assert first is not None
    assert store.replace("state/latest.json", b"v1 again", etag=None) is None  # exists now

    second = store.replace("state/latest.json", b"v2", etag=first)
    assert second is not None
    assert second != first
    assert store.replace("state/latest.json", b"lost race", etag=first) is None

    blob = store.read("state/latest.json")
    assert blob is not None
    assert (blob.data, blob.etag) == (b"v2", second)


def test_names_lists_a_prefix_in_name_order(store: BlobStore):
    for name in ("b/2.json", "a/1.json", "b/1.json", "bb/1.json"):
        store.create(name, b"{}")
    assert list(store.names("b/")) == ["b/1.json", "b/2.json"]
    assert list(store.names()) == ["a/1.json", "b/1.json", "b/2.json", "bb/1.json"]


def test_a_received_message_is_invisible_then_comes_back_with_a_new_receipt(queue: Queue):
    queue.send('{"region": "francecentral"}')

    first = queue.receive(visibility_timeout=1)
    assert first is not None
    assert (first.content, first.dequeue_count) == ('{"region": "francecentral"}', 1)
    assert queue.receive(visibility_timeout=1) is None
    assert queue.depth() == 1  # invisible, not gone

    time.sleep(1.3)
    again = queue.receive(visibility_timeout=30)
    assert again is not None
    assert again.id == first.id
    assert again.dequeue_count == 2
    assert again.pop_receipt != first.pop_receipt

    with pytest.raises(STALE):
        queue.delete(first)  # the first consumer's receipt is stale
    queue.delete(again)
    assert queue.depth() == 0
    queue.delete(again)  # already gone: idempotent


def test_extend_hands_out_a_new_receipt_and_the_old_one_is_refused(queue: Queue):
    queue.send("work")
    message = queue.receive(visibility_timeout=30)
    assert message is not None

    extended = queue.extend(message, visibility_timeout=30)
    assert extended.pop_receipt != message.pop_receipt
    with pytest.raises(STALE):
        queue.extend(message, visibility_timeout=30)
    queue.delete(extended)
    assert queue.receive(visibility_timeout=1) is None


def test_peek_sees_visible_messages_without_receiving_them(queue: Queue):
    for content in ("one", "two"):
        queue.send(content)
    assert [m.content for m in queue.peek()] == ["one", "two"]
    received = queue.receive(visibility_timeout=30)
    assert received is not None
    assert received.dequeue_count == 1  # peeking did not count as a delivery
    assert [m.content for m in queue.peek()] == ["two"]


def test_memory_queue_moves_with_an_injected_clock():
    now = [1000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731 - a tiny test clock
    queue = MemoryQueue("clocked", clock=clock)
    queue.send("later", visibility_timeout=60)
    assert queue.receive(visibility_timeout=10) is None
    now[0] += 60
    message = queue.receive(visibility_timeout=10)
    assert message is not None
    assert message.content == "later"
