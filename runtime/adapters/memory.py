"""In-memory adapters for the BlobStore and Queue ports, with Azure Storage's semantics.

They stand beside the Azure adapters (dramatiq's StubBroker idea), not instead of them: the
contract tests run the same assertions over both, so the fake cannot drift from Azurite.
What they keep of the real services is what the pipeline relies on: create-only writes, ETag
conditions, listings in name order; visibility timeouts, dequeue counts, a new pop receipt on
every receive and extend, and a stale receipt refused. `MemoryAccount` holds them by name, and
its `clients` has `StorageClients`' shape, so whole components can run over it in tests.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core.layout import poison_name
from core.ports import Blob, LostReceipt, Message


class MemoryBlobStore:
    """One container. ETags are opaque and change on every write, as Azure's do."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        # Shaped like Azure's (https, the container the first path segment): events carry it and
        # are checked against it. `.invalid` never resolves.
        self.url = f"https://memory.blob.invalid/{name}"
        self._blobs: dict[str, Blob] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)

    def _etag(self) -> str:
        return f'"0x{next(self._etags):016X}"'

    def read(self, name: str) -> Blob | None:
        with self._lock:
            return self._blobs.get(name)

    def create(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/json",
        metadata: dict[str, str] | None = None,
    ) -> bool:
        with self._lock:
            if name in self._blobs:
                return False
            self._blobs[name] = Blob(bytes(data), self._etag())
            return True

    def replace(
        self, name: str, data: bytes, *, etag: str | None, content_type: str = "application/json"
    ) -> str | None:
        with self._lock:
            current = self._blobs.get(name)
            if (current.etag if current else None) != etag:
                return None
            blob = Blob(bytes(data), self._etag())
            self._blobs[name] = blob
            return blob.etag

    def names(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            found = sorted(name for name in self._blobs if name.startswith(prefix))
        yield from found

    def delete(self, name: str) -> None:
        """For tests that lose a blob on purpose."""
        with self._lock:
            self._blobs.pop(name, None)

    def blob_url(self, name: str) -> str:
        return f"{self.url}/{name}"


@dataclass
class _Stored:
    id: str
    content: str
    inserted_on: str
    visible_at: float
    dequeue_count: int = 0
    pop_receipt: str = ""


class MemoryQueue:
    """A storage queue. `clock` is injectable so tests move time instead of sleeping."""

    def __init__(
        self, name: str = "memory", clock: Callable[[], float] = time.monotonic, *, exists: bool = True
    ) -> None:
        self.name = name
        # An account's queue named before anyone made it: its depth fails, as Azure's does
        # (`status` shows it as missing). Sending makes it, more leniently than Azure.
        self.exists = exists
        self._clock = clock
        self._messages: dict[str, _Stored] = {}  # insertion order is delivery order
        self._lock = threading.Lock()

    def send(self, content: str, *, delay: int = 0) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        stored = _Stored(uuid.uuid4().hex, content, stamp, self._clock() + delay)
        with self._lock:
            self.exists = True
            self._messages[stored.id] = stored

    def receive(self, visibility_timeout: int) -> Message | None:
        now = self._clock()
        with self._lock:
            for stored in self._messages.values():
                if stored.visible_at <= now:
                    stored.dequeue_count += 1
                    stored.pop_receipt = uuid.uuid4().hex
                    stored.visible_at = now + visibility_timeout
                    return self._message(stored)
        return None

    def extend(self, message: Message, visibility_timeout: int) -> Message:
        with self._lock:
            stored = self._current(message)
            stored.pop_receipt = uuid.uuid4().hex
            stored.visible_at = self._clock() + visibility_timeout
            return message._replace(pop_receipt=stored.pop_receipt)

    def delete(self, message: Message) -> None:
        with self._lock:
            if message.id not in self._messages:
                return  # already gone: deleting is idempotent, as the Azure adapter makes it
            self._current(message)
            del self._messages[message.id]

    def peek(self, count: int = 32) -> list[Message]:
        now = self._clock()
        with self._lock:
            visible = [m for m in self._messages.values() if m.visible_at <= now]
            return [self._message(m)._replace(pop_receipt="") for m in visible[: min(count, 32)]]

    def depth(self) -> int:
        with self._lock:
            if not self.exists:
                raise LookupError(f"queue {self.name!r} does not exist")
            return len(self._messages)

    def _current(self, message: Message) -> _Stored:
        stored = self._messages.get(message.id)
        if stored is None or stored.pop_receipt != message.pop_receipt:
            # As the Azure adapter turns 400 PopReceiptMismatch / 404 MessageNotFound into it.
            raise LostReceipt(f"message {message.id} in {self.name}: its pop receipt no longer holds")
        return stored

    @staticmethod
    def _message(stored: _Stored) -> Message:
        return Message(
            stored.id, stored.pop_receipt, stored.content, stored.dequeue_count, stored.inserted_on
        )


class MemoryAccount:
    """A storage account in memory: every client built over it sees the same containers and
    queues, as every process sees the one Azure account. Containers and queues come into being
    when first named (in Azure, Terraform or `ensure` has made them)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._containers: dict[str, MemoryBlobStore] = {}
        self._queues: dict[str, MemoryQueue] = {}
        self._lock = threading.Lock()

    def container(self, name: str) -> MemoryBlobStore:
        with self._lock:
            return self._containers.setdefault(name, MemoryBlobStore(name))

    def queue(self, name: str) -> MemoryQueue:
        with self._lock:
            if name not in self._queues:
                self._queues[name] = MemoryQueue(name, clock=self._clock, exists=False)
            return self._queues[name]

    def clients(self, settings: Any, credential: Any = None) -> MemoryClients:
        """`StorageClients(settings, credential)` over this account: the same call, so a test
        can hand it to the components' wiring in place of the Azure one."""
        return MemoryClients(settings, self)


class MemoryClients:
    """What `runtime.adapters.storage.StorageClients` offers the components, over a MemoryAccount."""

    def __init__(self, settings: Any, account: MemoryAccount) -> None:
        self.settings = settings
        self.account = account
        self.credential = None  # nothing to authenticate to

    def poison(self, name: str) -> MemoryQueue:
        """The poison queue of queue `name`."""
        return self.account.queue(poison_name(name))

    def container(self, name: str) -> MemoryBlobStore:
        return self.account.container(name)

    def queue(self, name: str) -> MemoryQueue:
        return self.account.queue(name)

    def ensure(self, containers: list[str], queues: list[str]) -> None:
        for name in containers:
            self.account.container(name)
        for name in queues:
            self.account.queue(name).exists = True
