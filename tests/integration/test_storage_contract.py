"""The BlobStore and Queue contract, asserted the same way over Azurite and the in-memory
adapters: what the pipeline relies on, so the fake cannot drift from the real service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.ports import BlobStore, LostReceipt, Queue
from runtime.adapters.memory import MemoryAccount, MemoryBlobStore, MemoryQueue
from runtime.adapters.storage import AzureBlobStore, AzureQueue, StorageClients, StorageSettings
from runtime.config import Env
from tests.integration.conftest import MEMORY_CONNECTION_STRING, unique_name


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


@pytest.fixture(params=["memory", "azurite"])
def new_clients(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Builds a component's clients, as each component (and process) does for itself."""
    if request.param == "memory":
        account = MemoryAccount()
        settings = StorageSettings.from_env(
            Env({"SERVICETAGS_STORAGE_CONNECTION_STRING": MEMORY_CONNECTION_STRING})
        )
        yield lambda: account.clients(settings)
        return
    azurite = request.getfixturevalue("azurite")
    settings = StorageSettings.from_env(
        Env({"SERVICETAGS_STORAGE_CONNECTION_STRING": azurite.connection_string})
    )
    made: list[Any] = []
    yield lambda: made.append(StorageClients(settings)) or made[-1]
    for clients in made:
        clients.blobs.close()
        clients.queues.close()


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
    queue.send("later", delay=60)
    assert queue.receive(visibility_timeout=10) is None
    now[0] += 60
    message = queue.receive(visibility_timeout=10)
    assert message is not None
    assert message.content == "later"


def test_a_delayed_message_is_counted_but_not_delivered_before_its_time(queue: Queue):
    queue.send("the run's deadline", delay=60)
    assert queue.receive(visibility_timeout=1) is None
    assert queue.peek() == []
    assert queue.depth() == 1


def test_clients_built_apart_see_one_account(new_clients: Callable[[], Any]):
    writer, reader = new_clients(), new_clients()
    name = unique_name("shared")
    writer.ensure([name], [name])
    writer.ensure([name], [name])  # again: what exists is left alone
    try:
        assert writer.container(name).create("Public/regions.json", b"{}")
        assert list(reader.container(name).names()) == ["Public/regions.json"]
        writer.queue(name).send("hello")
        assert [m.content for m in reader.queue(name).peek()] == ["hello"]
    finally:
        if isinstance(writer, StorageClients):  # Azurite is the session's: leave it as found
            writer.blobs.delete_container(name)
            writer.queues.delete_queue(name)
