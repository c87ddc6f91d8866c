"""The seams between the core and the outside world: small Protocols, no SDK types.

A blob store and a queue (Azure Storage in `runtime/adapters/storage.py`, in memory in
`runtime/adapters/memory.py`), where the worker's service tags come from (`TagSource`: ARM, a
file, the Download Center, in `worker/`), how the notifier sends mail (`MailSender`: SMTP or
Azure Communication Services, in `notifier/mail.py`), and the clock handlers are given."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from typing import NamedTuple, Protocol


class Clock(Protocol):
    """The time now, timezone-aware (UTC): injected so tests can move it."""

    def __call__(self) -> datetime: ...


class Fetched(NamedTuple):
    body: bytes
    origin: str  # for messages and logs: URL or path


class TagSource(Protocol):
    def fetch(self, cloud: str, location: str) -> Fetched:
        """The raw service-tags reply (bytes, maybe gzip) as seen from `location`. Raises
        TransientError (retry later) or PermanentError (poison)."""
        ...


class MailSender(Protocol):
    def send(self, msg: EmailMessage) -> str:
        """Send `msg`; return the provider's id for it. Raises Transient/PermanentMailError."""
        ...


class Blob(NamedTuple):
    data: bytes
    etag: str


class BlobStore(Protocol):
    """One blob container."""

    def read(self, name: str) -> Blob | None: ...

    def create(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/json",
        metadata: dict[str, str] | None = None,
    ) -> bool:
        """Write only if absent; False when the blob already exists."""

    def replace(
        self, name: str, data: bytes, *, etag: str | None, content_type: str = "application/json"
    ) -> str | None:
        """Write if the blob still has `etag` (None: if it does not exist); the new etag, or None
        when the condition failed."""

    def names(self, prefix: str = "") -> Iterator[str]: ...


class Message(NamedTuple):
    id: str
    pop_receipt: str
    content: str
    dequeue_count: int
    inserted_on: str = ""


class LostReceipt(Exception):
    """A message's pop receipt is no longer valid: its visibility ran out and another consumer
    received it (or will), or the service forgot it (a restart). The message is not lost; it
    is simply not ours any more. Raised by `Queue.extend` and `Queue.delete`."""


class Queue(Protocol):
    name: str

    def receive(self, visibility_timeout: int) -> Message | None: ...

    def extend(self, message: Message, visibility_timeout: int) -> Message:
        """Keep the message invisible longer; returns it with its new pop receipt. LostReceipt
        when the receipt no longer holds."""

    def delete(self, message: Message) -> None:
        """Delete the message; nothing if it is gone already. LostReceipt when the receipt no
        longer holds (the message is still there, now someone else's)."""

    def send(self, content: str, *, delay: int = 0) -> None:
        """Enqueue; with `delay`, the message becomes visible only that many seconds later."""

    def peek(self, count: int = 32) -> list[Message]: ...

    def depth(self) -> int: ...
